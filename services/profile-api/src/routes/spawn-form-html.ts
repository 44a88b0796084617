import escapeHtml from 'escape-html';
import { priceText } from '../profiles/price.js';
import type { UserProfile } from '../profiles/resolve.js';

/**
 * The form fragment the hub's own /hub/spawn shows (the hub's `options_form`), the way
 * KubeSpawner's profile form appears there: inside the hub's <form>, styled with the hub's
 * Bootstrap classes. Every option field is named by `optionField(slug, option)`, so
 * `options_from_form` in hub/profile_list.py reads back exactly the selected profile's fields.
 * The script only shows and hides: fields of other profiles and a hidden unlisted input are
 * disabled (a disabled field is not submitted), and the hub side ignores them anyway.
 */

interface ChoiceView {
  display_name: string;
  description?: string;
  default?: boolean;
  price_per_hour?: number;
  resources?: Resources;
}
interface Resources {
  cpu?: { guarantee?: number; limit?: number };
  memory?: { guarantee?: number; limit?: number };
  gpu?: { guarantee?: number; limit?: number };
}
interface OptionView {
  display_name: string;
  choices: Record<string, ChoiceView>;
  unlisted_choice: { enabled: boolean; display_name?: string; display_name_in_choices?: string; validation_message?: string };
}

const e = (s: unknown) => escapeHtml(String(s));

function summary(r: Resources | undefined, price: number | undefined, currency: string): string {
  const parts: string[] = [];
  const gib = (b: number) => `${(b / 1024 ** 3).toFixed(b % 1024 ** 3 === 0 ? 0 : 1)} GiB`;
  if (r?.cpu) parts.push(`${r.cpu.limit ?? r.cpu.guarantee} CPU`);
  const mem = r?.memory?.limit ?? r?.memory?.guarantee;
  if (mem !== undefined) parts.push(`${gib(mem)} RAM`);
  if (r?.gpu) parts.push(`${r.gpu.limit ?? r.gpu.guarantee} GPU`);
  const text = priceText([price]);
  if (text !== null) parts.push(`${text} ${currency} per hour`);
  return parts.join(' · ');
}

export const FIELD_PREFIX = 'hubside-option:';
export const UNLISTED = '--unlisted-choice';

/**
 * The form field of one option of one profile: JSON [slug, option] in hex, because browsers
 * percent-encode quotes in multipart field names, and a slug may contain any character.
 */
export function optionField(slug: string, option: string): string {
  return FIELD_PREFIX + Buffer.from(JSON.stringify([slug, option]), 'utf8').toString('hex');
}

export function spawnFormHtml(profiles: readonly UserProfile[], opts: { currency: string }): string {
  if (profiles.length === 0) return '<div class="hubside-spawn"><p class="alert alert-warning">No profiles are available to you.</p></div>';
  const chosen = (profiles.find((p) => p.default) ?? profiles[0])!.slug;
  const out: string[] = [];
  out.push(`<div class="hubside-spawn" data-currency="${e(opts.currency)}">
<style>
.hubside-spawn .hubside-profile{border:1px solid #ddd;border-radius:4px;padding:10px 14px;margin:0 0 10px}
.hubside-spawn .hubside-profile.selected{border-color:#f37524}
.hubside-spawn .hubside-meta{color:#555;font-size:90%}
.hubside-spawn .hubside-options{margin:8px 0 0 22px}
.hubside-spawn .hubside-options .form-group{margin-bottom:8px}
.hubside-spawn .hubside-total{font-weight:600;margin:6px 0 12px}
</style>`);
  for (const p of profiles) {
    const id = `hubside-profile-${p.slug}`;
    const on = p.slug === chosen;
    out.push(`<div class="hubside-profile${on ? ' selected' : ''}" data-slug="${e(p.slug)}" data-price="${e(p.price_per_hour ?? '')}">
<label for="${e(id)}"><input type="radio" name="profile" id="${e(id)}" value="${e(p.slug)}"${on ? ' checked' : ''}> <strong>${e(p.display_name)}</strong></label>
${p.description ? `<div class="hubside-meta">${e(p.description)}</div>` : ''}
<div class="hubside-meta hubside-price">${e(summary(p.resources as Resources, p.price_per_hour, opts.currency))}</div>
<div class="hubside-options"${on ? '' : ' hidden'}>`);
    for (const [name, raw] of Object.entries(p.profile_options ?? {})) {
      const option = raw as OptionView;
      const field = optionField(p.slug, name);
      const selId = `${id}--${name}`;
      out.push(`<div class="form-group"><label for="${e(selId)}">${e(option.display_name)}</label>
<select class="form-control hubside-select" id="${e(selId)}" name="${e(field)}"${on ? '' : ' disabled'}>`);
      for (const [key, c] of Object.entries(option.choices)) {
        const extra = summary(c.resources, c.price_per_hour, opts.currency);
        out.push(`<option value="${e(key)}" data-price="${e(c.price_per_hour ?? '')}"${c.default ? ' selected' : ''}>${e(c.display_name)}${extra ? e(` (${extra})`) : ''}</option>`);
      }
      const u = option.unlisted_choice;
      if (u.enabled) out.push(`<option value="${UNLISTED}"${Object.keys(option.choices).length === 0 ? ' selected' : ''}>${e(u.display_name_in_choices ?? 'Other...')}</option>`);
      out.push('</select>');
      if (u.enabled) {
        const shown = Object.keys(option.choices).length === 0 && on;
        out.push(`<div class="hubside-unlisted"${shown ? '' : ' hidden'}><label for="${e(selId)}-unlisted">${e(u.display_name ?? 'Other')}</label>
<input type="text" class="form-control" id="${e(selId)}-unlisted" name="${e(field + UNLISTED)}" maxlength="512" autocomplete="off"${shown ? '' : ' disabled'}${u.validation_message ? ` title="${e(u.validation_message)}"` : ''}></div>`);
      }
      out.push('</div>');
    }
    out.push('</div></div>');
  }
  out.push(`<p class="hubside-total" aria-live="polite"></p>
<script>
(function () {
  'use strict';
  var priceText = ${priceText.toString()};
  var root = document.currentScript.closest('.hubside-spawn');
  var currency = root.getAttribute('data-currency');
  function num(v) { return v === '' || v === null ? undefined : Number(v); }
  function sync() {
    var total = root.querySelector('.hubside-total');
    total.textContent = '';
    root.querySelectorAll('.hubside-profile').forEach(function (box) {
      var on = box.querySelector('input[name=profile]').checked;
      box.classList.toggle('selected', on);
      box.querySelector('.hubside-options').hidden = !on;
      var parts = [num(box.getAttribute('data-price'))];
      box.querySelectorAll('select.hubside-select').forEach(function (select) {
        select.disabled = !on;
        var unlisted = select.parentNode.querySelector('.hubside-unlisted');
        var other = select.value === '${UNLISTED}';
        if (unlisted) {
          unlisted.hidden = !(on && other);
          unlisted.querySelector('input').disabled = !(on && other);
          unlisted.querySelector('input').required = on && other;
        }
        if (!other) parts.push(num(select.selectedOptions[0] && select.selectedOptions[0].getAttribute('data-price')));
      });
      if (on) {
        var text = priceText(parts);
        total.textContent = text === null ? '' : 'Price: ' + text + ' ' + currency + ' per hour';
      }
    });
  }
  root.addEventListener('change', sync);
  sync();
})();
</script></div>`);
  return out.join('\n');
}
