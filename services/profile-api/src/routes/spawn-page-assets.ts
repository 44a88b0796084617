import escapeHtml from 'escape-html';
import { priceText } from '../profiles/price.js';

/** The page shell; everything dynamic is rendered by spawn.js from the API, as text nodes. */
export function spawnPageHtml(opts: { prefix: string; user: string; baseUrl: string; currency: string }): string {
  const data = escapeHtml(JSON.stringify({ prefix: opts.prefix, user: opts.user, baseUrl: opts.baseUrl, currency: opts.currency }));
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Start your server</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
fieldset{border:1px solid #bbb;border-radius:.5rem;margin:0 0 1rem;padding:.75rem 1rem}
.profile{display:block;border:2px solid #ddd;border-radius:.5rem;padding:.75rem;margin:.5rem 0}
.profile:focus-within,.profile.selected{border-color:#2a62c9}
.meta{color:#444;font-size:.9rem}.price{font-weight:600}
.options{margin:.5rem 0 0 1.5rem}.options label{display:block;margin:.4rem 0}
.error{color:#b00020}input[aria-invalid=true]{border-color:#b00020;outline-color:#b00020}
button{font-size:1rem;padding:.5rem 1.25rem}progress{width:100%}
</style></head><body>
<main id="app" data-config="${data}">
<h1>Start your server</h1>
<p>Signed in as <strong id="user">${escapeHtml(opts.user)}</strong>.</p>
<form id="spawn-form" novalidate>
<fieldset><legend>Choose a profile</legend><div id="profiles">Loading profiles…</div></fieldset>
<p id="total" class="price" aria-live="polite"></p>
<p id="form-error" class="error" role="alert"></p>
<button id="start" type="submit">Start</button>
</form>
<section aria-live="polite"><progress id="progress" max="100" value="0" hidden></progress><p id="status"></p></section>
</main>
<script src="${escapeHtml(opts.prefix)}static/spawn.js"></script>
</body></html>`;
}

// Plain browser JavaScript, no build step. Builds DOM with textContent only (names and
// descriptions come from admins; nothing is parsed as HTML).
export const SPAWN_JS = String.raw`(() => {
  'use strict';
  const app = document.getElementById('app');
  const cfg = JSON.parse(app.dataset.config);
  const storeKey = 'hubside-profile:' + cfg.user;
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') e.textContent = v; else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  };
  // The same function resolve prices a selection with, so the price shown is the price billed.
  const priceText = ${priceText.toString()};
  const gib = (b) => (b / 1024 ** 3).toFixed(b % 1024 ** 3 === 0 ? 0 : 1) + ' GiB';
  function summary(r, price) {
    const parts = [];
    if (r && r.cpu) parts.push((r.cpu.limit ?? r.cpu.guarantee) + ' CPU');
    if (r && r.memory) parts.push(gib(r.memory.limit ?? r.memory.guarantee) + ' RAM');
    if (r && r.gpu) parts.push((r.gpu.limit ?? r.gpu.guarantee) + ' GPU');
    const text = priceText([price]);
    if (text !== null) parts.push(text + ' ' + cfg.currency + ' per hour');
    return parts.join(' · ');
  }
  let remembered = {};
  try { remembered = JSON.parse(localStorage.getItem(storeKey) || '{}'); } catch { remembered = {}; }
  let profiles = [];

  function unlistedValid(option, input) {
    const u = option.unlisted_choice;
    const v = input.value;
    let ok = v.length > 0 && v.length <= 512;
    if (ok && u.validation_regex) { try { ok = new RegExp('^(?:' + u.validation_regex + ')', 'u').test(v); } catch { ok = true; } }
    input.setAttribute('aria-invalid', ok ? 'false' : 'true');
    const msg = document.getElementById(input.id + '-error');
    msg.textContent = ok ? '' : (u.validation_message || 'This value is not allowed.');
    return ok;
  }

  function render() {
    const root = $('profiles');
    root.textContent = '';
    const chosen = remembered.profile && profiles.some((p) => p.slug === remembered.profile) ? remembered.profile : (profiles.find((p) => p.default) || profiles[0] || {}).slug;
    if (profiles.length === 0) { root.textContent = 'No profiles are available to you.'; $('start').disabled = true; return; }
    for (const p of profiles) {
      const id = 'profile-' + p.slug;
      const radio = el('input', { type: 'radio', name: 'profile', value: p.slug, id, checked: p.slug === chosen });
      const label = el('label', { for: id }, el('strong', { text: p.display_name }));
      const box = el('div', { class: 'profile' + (p.slug === chosen ? ' selected' : ''), 'data-slug': p.slug }, radio, ' ', label,
        p.description ? el('div', { class: 'meta', text: p.description }) : null,
        el('div', { class: 'meta price', text: summary(p.resources, p.price_per_hour) }));
      const opts = el('div', { class: 'options', hidden: p.slug !== chosen });
      for (const [name, option] of Object.entries(p.profile_options || {})) {
        const selId = id + '-' + name;
        const select = el('select', { id: selId, name });
        const rememberedChoice = remembered.profile === p.slug ? remembered[name] : undefined;
        for (const [key, c] of Object.entries(option.choices)) {
          const extra = summary(c.resources, c.price_per_hour);
          select.append(el('option', { value: key, selected: rememberedChoice ? rememberedChoice === key : c.default, text: c.display_name + (extra ? ' (' + extra + ')' : '') }));
        }
        let unlistedInput = null;
        if (option.unlisted_choice && option.unlisted_choice.enabled) {
          const rememberedOther = remembered.profile === p.slug ? remembered[name + '--unlisted-choice'] : undefined;
          select.append(el('option', { value: '--unlisted-choice', selected: !!rememberedOther, text: option.unlisted_choice.display_name_in_choices || 'Other...' }));
          const inId = selId + '--unlisted';
          unlistedInput = el('input', { id: inId, type: 'text', name: name + '--unlisted-choice', maxlength: 512, 'aria-describedby': inId + '-error', value: rememberedOther || '' });
          const wrap = el('label', { for: inId, hidden: !rememberedOther }, (option.unlisted_choice.display_name || 'Other') + ' ', unlistedInput,
            el('span', { id: inId + '-error', class: 'error', role: 'status' }));
          unlistedInput.addEventListener('input', () => unlistedValid(option, unlistedInput));
          select.addEventListener('change', () => { wrap.hidden = select.value !== '--unlisted-choice'; if (!wrap.hidden) unlistedInput.focus(); });
          opts.append(el('label', { for: selId }, option.display_name + ' ', select), wrap);
        } else {
          opts.append(el('label', { for: selId }, option.display_name + ' ', select));
        }
        select._option = option; select._unlisted = unlistedInput;
      }
      box.append(opts);
      radio.addEventListener('change', () => {
        for (const b of root.querySelectorAll('.profile')) { const on = b.dataset.slug === p.slug; b.classList.toggle('selected', on); b.querySelector('.options').hidden = !on; }
      });
      root.append(box);
    }
  }

  function showTotal() {
    const radio = document.querySelector('input[name=profile]:checked');
    const p = radio && profiles.find((x) => x.slug === radio.value);
    if (!p) { $('total').textContent = ''; return; }
    const parts = [p.price_per_hour];
    for (const select of radio.closest('.profile').querySelectorAll('select')) {
      const c = select._option.choices[select.value];
      if (c) parts.push(c.price_per_hour);
    }
    const text = priceText(parts);
    $('total').textContent = text === null ? '' : 'Price: ' + text + ' ' + cfg.currency + ' per hour';
  }

  function selection() {
    const radio = document.querySelector('input[name=profile]:checked');
    if (!radio) return null;
    const box = radio.closest('.profile');
    const out = { profile: radio.value };
    let ok = true;
    for (const select of box.querySelectorAll('select')) {
      if (select.value === '--unlisted-choice') {
        if (!unlistedValid(select._option, select._unlisted)) { ok = false; select._unlisted.focus(); }
        out[select.name + '--unlisted-choice'] = select._unlisted.value;
      } else out[select.name] = select.value;
    }
    return ok ? out : null;
  }

  function follow(url) {
    const progress = $('progress');
    progress.hidden = false;
    const source = new EventSource(cfg.prefix + 'api/spawn/progress');
    source.onmessage = (ev) => {
      let e; try { e = JSON.parse(ev.data); } catch { return; }
      if (typeof e.progress === 'number') progress.value = e.progress;
      if (e.message) $('status').textContent = e.message;
      if (e.failed) { source.close(); $('form-error').textContent = e.message || 'Your server failed to start.'; $('start').disabled = false; }
      if (e.ready) { source.close(); $('status').textContent = 'Your server is ready. Opening it…'; window.location.assign(e.url || url); }
    };
    source.onerror = () => { source.close(); };
  }

  $('spawn-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('form-error').textContent = '';
    const body = selection();
    if (!body) { $('form-error').textContent = 'Please fix the highlighted field.'; return; }
    $('start').disabled = true;
    $('status').textContent = 'Starting your server…';
    try { localStorage.setItem(storeKey, JSON.stringify(body)); } catch {}
    const res = await fetch(cfg.prefix + 'api/spawn', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), credentials: 'same-origin' });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) { $('form-error').textContent = answer.message || 'Could not start your server.'; $('status').textContent = ''; $('start').disabled = false; return; }
    if (answer.status === 'ready') { window.location.assign(answer.url); return; }
    follow(answer.url);
  });

  fetch(cfg.prefix + 'api/profiles', { credentials: 'same-origin' })
    .then((r) => r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status)))
    .then((list) => { profiles = list; render(); showTotal(); $('profiles').addEventListener('change', showTotal); })
    .catch((err) => { $('profiles').textContent = 'Could not load your profiles (' + err.message + ').'; });
})();
`;
