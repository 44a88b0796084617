import escapeHtml from 'escape-html';

const STYLE =
  'body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;line-height:1.5}' +
  'ul{list-style:none;padding:0}li a{display:block;padding:.75rem 1rem;margin:.25rem 0;border:1px solid #888;border-radius:.4rem;text-decoration:none;color:inherit}' +
  'li a:focus,li a:hover{outline:3px solid #1a5fb4;background:#eef4fc}input{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box}' +
  '.last{font-size:.85rem;color:#555}.error{border-left:4px solid #c01c28;padding-left:1rem}';

export const PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; form-action 'self' http: https:; base-uri 'none'; frame-ancestors 'none'";

function shell(title: string, body: string, script?: string): string {
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><style>${STYLE}</style>` +
    `${script ? `<script src="${escapeHtml(script)}" defer></script>` : ''}</head><body><main>${body}</main></body></html>`
  );
}

export interface PageLink {
  href: string;
  text: string;
}

/**
 * A refusal or notice. A refusal never ends the person's way: `links` lead back to the
 * institution chooser and to the hub, so they can try another institution or ask the hub.
 */
export function errorPage(opts: { title: string; message: string; status?: number; back?: string | undefined; links?: PageLink[] }): string {
  const links = [...(opts.links ?? []), ...(opts.back ? [{ href: opts.back, text: 'Back to the hub' }] : [])];
  return shell(
    opts.title,
    `<div class="error" role="alert"><h1 id="title">${escapeHtml(opts.title)}</h1><p id="message">${escapeHtml(opts.message)}</p></div>` +
      (links.length > 0
        ? `<nav aria-label="What you can do next"><ul id="next">${links.map((l) => `<li><a href="${escapeHtml(l.href)}">${escapeHtml(l.text)}</a></li>`).join('')}</ul></nav>`
        : ''),
  );
}

export interface ChooserEntry {
  name: string;
  displayName: string;
  keywords: string[];
  href: string;
}

export function chooserPage(opts: { hubName: string; entries: ChooserEntry[]; lastIdp?: string | undefined; scriptUrl: string }): string {
  const entries = [...opts.entries].sort((a, b) => (a.name === opts.lastIdp ? -1 : b.name === opts.lastIdp ? 1 : 0));
  const items = entries
    .map(
      (e) =>
        `<li data-search="${escapeHtml([e.displayName, ...e.keywords].join(' ').toLowerCase())}">` +
        `<a href="${escapeHtml(e.href)}" data-idp="${escapeHtml(e.name)}">${escapeHtml(e.displayName)}` +
        `${e.name === opts.lastIdp ? ' <span class="last">(last used)</span>' : ''}</a></li>`,
    )
    .join('');
  return shell(
    `Log in to ${opts.hubName}`,
    `<h1>Log in to ${escapeHtml(opts.hubName)}</h1>` +
      `<label for="search">Search for your institution</label>` +
      `<input id="search" type="search" autocomplete="off" aria-controls="idps" autofocus>` +
      `<p id="count" role="status" aria-live="polite"></p>` +
      `<ul id="idps">${items}</ul>`,
    opts.scriptUrl,
  );
}

/** Filters the chooser as you type; Enter follows the first match. Plain links work without it. */
export const CHOOSER_JS = `'use strict';
(function () {
  var input = document.getElementById('search');
  var list = document.getElementById('idps');
  var count = document.getElementById('count');
  if (!input || !list) return;
  function visible() {
    return Array.prototype.filter.call(list.children, function (li) { return !li.hidden; });
  }
  input.addEventListener('input', function () {
    var q = input.value.trim().toLowerCase();
    Array.prototype.forEach.call(list.children, function (li) {
      li.hidden = q !== '' && li.getAttribute('data-search').indexOf(q) === -1;
    });
    var n = visible().length;
    count.textContent = n === 1 ? '1 institution' : n + ' institutions';
  });
  input.addEventListener('keydown', function (ev) {
    if (ev.key === 'Enter') {
      var first = visible()[0];
      if (first) { ev.preventDefault(); first.querySelector('a').click(); }
    } else if (ev.key === 'ArrowDown') {
      var firstLink = visible()[0];
      if (firstLink) { ev.preventDefault(); firstLink.querySelector('a').focus(); }
    }
  });
})();
`;
