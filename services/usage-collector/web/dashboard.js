// Hubside usage dashboards. One script for every view; it reads only the JSON API
// (api/dashboard/*), renders with DOM methods (never innerHTML with data) and Chart.js.
/* global Chart */
(() => {
  'use strict';
  const body = document.body;
  const view = body.dataset.view;
  const prefix = body.dataset.prefix;
  const content = document.getElementById('content');
  const statusEl = document.getElementById('status');
  const errorEl = document.getElementById('error');
  const form = document.getElementById('period-form');
  const periodSel = document.getElementById('period');
  const customBox = document.getElementById('custom');
  const fromIn = document.getElementById('from');
  const toIn = document.getElementById('to');
  const shareToken = view === 'shared' ? decodeURIComponent(location.hash.slice(1)) : null;
  const charts = [];
  // Colours with at least 3:1 contrast on white (WCAG 1.4.11), distinguishable in order.
  const PALETTE = ['#0b5cad', '#b3261e', '#1e7b34', '#8a4f00', '#6a3d9a', '#00707a', '#a0306e', '#4d4d4d', '#3f51b5', '#7a5c00'];

  const params = new URLSearchParams(location.search);
  const state = {
    period: params.get('period') || (params.get('from') ? 'custom' : 'this-month'),
    from: params.get('from') || '',
    to: params.get('to') || '',
    group: params.get('group') || '',
    page: Number(params.get('page') || 1),
    sort: params.get('sort') || 'net',
    order: params.get('order') || 'desc',
  };

  // ---- small helpers ---------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const num = (field, value) => h('span', { 'data-field': field }, value);
  /** Hours as people read them, to the minute ("7 h 35 min"); the API's exact figure stays in `value`. */
  function hoursText(value) {
    const minutes = Math.round(Number(value) * 60);
    const hh = Math.floor(minutes / 60);
    const mm = minutes % 60;
    if (hh === 0) return `${mm} min`;
    return `${hh.toLocaleString('en-US')} h${mm ? ` ${mm} min` : ''}`;
  }
  const hrs = (field, value) => h('data', { value, 'data-field': field }, hoursText(value));
  const utcDay = (t) => new Date(t).toISOString().slice(0, 10);
  const addDays = (day, n) => utcDay(Date.parse(`${day}T00:00:00Z`) + n * 86400000);

  /** The API range: `to` is exclusive there; the picker shows an inclusive last day. */
  function range() {
    const now = new Date();
    const y = now.getUTCFullYear();
    const m = now.getUTCMonth();
    if (state.period === 'last-month') return { from: utcDay(Date.UTC(y, m - 1, 1)), to: utcDay(Date.UTC(y, m, 1)) };
    if (state.period === 'last-30') {
      const today = utcDay(now.getTime());
      return { from: addDays(today, -29), to: addDays(today, 1) };
    }
    if (state.period === 'custom' && state.from && state.to) return { from: state.from, to: addDays(state.to, 1) };
    return { from: utcDay(Date.UTC(y, m, 1)), to: utcDay(Date.UTC(y, m + 1, 1)) };
  }

  function syncUrl() {
    const p = new URLSearchParams();
    if (state.period !== 'this-month') p.set('period', state.period);
    if (state.period === 'custom') {
      p.set('from', state.from);
      p.set('to', state.to);
    }
    if (state.group) p.set('group', state.group);
    if (state.page > 1) p.set('page', String(state.page));
    if (state.sort !== 'net' || state.order !== 'desc') {
      p.set('sort', state.sort);
      p.set('order', state.order);
    }
    const qs = p.toString();
    history.replaceState(null, '', `${location.pathname}${qs ? `?${qs}` : ''}${location.hash}`);
  }

  class ApiError extends Error {
    constructor(status, message, data) {
      super(message);
      this.status = status;
      this.data = data;
    }
  }

  async function api(path, init) {
    const headers = { accept: 'application/json', ...((init && init.headers) || {}) };
    if (shareToken) headers['x-hubside-share'] = shareToken;
    let res;
    try {
      res = await fetch(`${prefix}${path}`, { credentials: 'same-origin', ...init, headers });
    } catch {
      throw new ApiError(0, 'The usage service could not be reached. Check your connection and try again.');
    }
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, (data && data.message) || `The request failed (HTTP ${res.status}).`, data);
    return data;
  }

  function setLoading(on) {
    statusEl.textContent = on ? 'Loading…' : '';
    content.setAttribute('aria-busy', on ? 'true' : 'false');
  }
  function showError(err) {
    const words =
      err.status === 403 ? `Not allowed: ${err.message}` : err.status === 404 ? `Not found: ${err.message}` : err.status === 400 ? `Please check the period: ${err.message}` : err.message;
    errorEl.hidden = false;
    errorEl.replaceChildren(h('strong', {}, 'Something went wrong. '), words);
  }
  function clearError() {
    errorEl.hidden = true;
    errorEl.replaceChildren();
  }

  function clearCharts() {
    while (charts.length) charts.pop().destroy();
  }

  function card(title, field, value, unit, note) {
    // Hours carry their own units ("h", "min").
    const shown = unit === 'h' ? [hrs(field, value)] : [num(field, value), unit ? ` ${unit}` : ''];
    return h('div', { class: 'card' }, h('h3', {}, title), h('p', { class: 'big' }, ...shown), note ? h('p', { class: 'note' }, note) : null);
  }

  function section(title, ...children) {
    const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
    return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
  }

  function empty(text) {
    return h('p', { class: 'empty' }, text);
  }

  /** A chart plus the same numbers as a table, for screen readers and keyboard users. */
  function chart(title, type, labels, datasets, opts) {
    const canvas = h('canvas', { role: 'img', 'aria-label': `${title} (chart; the same numbers are in the table below it)` });
    const wrap = h('div', { class: 'chart' }, canvas);
    const table = h(
      'table',
      { class: 'data' },
      h('caption', {}, title),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, opts && opts.labelHeader ? opts.labelHeader : 'Day'), datasets.map((d) => h('th', { scope: 'col' }, d.label)))),
      h('tbody', {}, labels.map((l, i) => h('tr', {}, h('th', { scope: 'row' }, l), datasets.map((d) => h('td', { class: 'n' }, d.data[i]))))),
    );
    const details = h('details', {}, h('summary', {}, `${title}: table`), h('div', { class: 'table-wrap' }, table));
    const fig = h('figure', {}, wrap, details);
    queueMicrotask(() => {
      if (typeof Chart === 'undefined') return;
      charts.push(
        new Chart(canvas, {
          type,
          data: { labels, datasets: datasets.map((d, i) => ({ ...d, data: d.data.map(Number), backgroundColor: d.color || PALETTE[i % PALETTE.length], borderColor: d.color || PALETTE[i % PALETTE.length] })) },
          options: {
            responsive: true,
            maintainAspectRatio: false,
            animation: false,
            plugins: { legend: { display: datasets.length > 1 || type === 'doughnut', labels: { color: '#1a1a1a' } } },
            scales: type === 'doughnut' ? {} : { x: { stacked: !!(opts && opts.stacked), ticks: { color: '#333' } }, y: { stacked: !!(opts && opts.stacked), beginAtZero: true, ticks: { color: '#333' } } },
          },
        }),
      );
    });
    return fig;
  }

  function table(caption, columns, rows, opts) {
    const sortable = opts && opts.sort;
    const head = h(
      'tr',
      {},
      columns.map((c) => {
        if (!sortable || !c.sort) return h('th', { scope: 'col', class: c.n ? 'n' : '' }, c.label);
        const active = state.sort === c.sort;
        const next = active && state.order === 'desc' ? 'asc' : 'desc';
        return h(
          'th',
          { scope: 'col', class: c.n ? 'n' : '', 'aria-sort': active ? (state.order === 'asc' ? 'ascending' : 'descending') : 'none' },
          h('button', { type: 'button', class: 'sort', 'data-sort': c.sort, onclick: () => opts.sort(c.sort, next) }, c.label, active ? (state.order === 'asc' ? ' ▲' : ' ▼') : ''),
        );
      }),
    );
    return h(
      'div',
      { class: 'table-wrap' },
      h(
        'table',
        { class: 'data', ...(opts && opts.id ? { id: opts.id } : {}) },
        h('caption', {}, caption),
        h('thead', {}, head),
        h('tbody', {}, rows.map((r, i) => h('tr', {}, columns.map((c, j) => h(j === 0 ? 'th' : 'td', { ...(j === 0 ? { scope: 'row' } : {}), class: c.n ? 'n' : '', ...(c.field ? { 'data-field': `${c.field}` } : {}) }, c.get(r, i)))))),
      ),
    );
  }

  // ---- views ---------------------------------------------------------------------------------
  function studentView(d) {
    const nodes = [];
    nodes.push(
      h(
        'div',
        { class: 'cards' },
        card('Cost this period', 'totals.gross', d.totals.gross, d.currency),
        card('Charged after allowance', 'totals.net', d.totals.net, d.currency),
        card('Hours', 'totals.hours', d.totals.hours, 'h'),
        card('Idle but running', 'totals.idle_hours', d.totals.idle_hours, 'h', 'Time your servers ran after their last activity.'),
      ),
    );
    if (d.budget) {
      const b = d.budget;
      const pct = Math.min(100, b.percent);
      nodes.push(
        section(
          'Budget',
          h('p', {}, 'Used ', num('budget.used', b.used), ' of ', num('budget.limit', b.limit), ` ${b.unit === 'hours' ? 'hours' : d.currency} (${b.window}); `, num('budget.remaining', b.remaining), ' left.'),
          h('div', { class: 'meter', role: 'meter', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-valuenow': pct, 'aria-label': 'Budget used, percent' }, h('div', { class: `fill${b.percent >= 90 ? ' warn' : ''}`, style: `width:${pct}%` })),
          h('p', { id: 'projection' }, b.runs_out ? `At your current pace the budget runs out on ${b.runs_out.slice(0, 10)}.` : 'At your current pace the budget lasts this window.'),
          h('p', { class: 'note' }, d.quota_message),
        ),
      );
    } else nodes.push(section('Budget', h('p', {}, 'No budget applies to you.')));
    const used = d.by_day.some((x) => Number(x.hours) > 0);
    nodes.push(section('By day', used ? chart('Cost per day', 'bar', d.by_day.map((x) => x.day), [{ label: `Cost (${d.currency})`, data: d.by_day.map((x) => x.cost) }]) : empty('No usage in this period.')));
    nodes.push(
      section(
        'By profile',
        d.by_profile.length
          ? table('Usage by profile', [{ label: 'Profile', get: (r) => r.profile }, { label: 'Hours', n: 1, field: 'hours', get: (r) => hrs(null, r.hours) }, { label: `Cost (${d.currency})`, n: 1, field: 'cost', get: (r) => r.cost }], d.by_profile, { id: 'by-profile' })
          : empty('No usage in this period.'),
      ),
    );
    nodes.push(
      section(
        'Sessions',
        d.sessions.length
          ? table(
              'Your sessions, newest first',
              [
                { label: 'Started', get: (r) => r.started.replace('T', ' ').slice(0, 16) },
                { label: 'Stopped', get: (r) => (r.stopped ? r.stopped.replace('T', ' ').slice(0, 16) : 'running') },
                { label: 'Server', get: (r) => r.server || '(default)' },
                { label: 'Profile', get: (r) => r.profile || '—' },
                { label: 'Hours', n: 1, get: (r) => hrs(null, r.hours) },
                { label: 'Idle', n: 1, get: (r) => hrs(null, r.idle_hours) },
                { label: `Cost (${d.currency})`, n: 1, get: (r) => r.cost },
              ],
              d.sessions,
              { id: 'sessions' },
            )
          : empty('No sessions in this period.'),
      ),
    );
    return nodes;
  }

  function courseView(d, groups) {
    const nodes = [];
    if (groups && groups.length) {
      const sel = h('select', { id: 'group', onchange: (e) => ((state.group = e.target.value), (state.page = 1), load()) }, groups.map((g) => h('option', { value: g, selected: g === d.group }, g)));
      nodes.push(h('p', { class: 'group-pick' }, h('label', { for: 'group' }, 'Course (group) '), sel));
    } else nodes.push(h('p', {}, 'Course: ', h('strong', { id: 'group-name' }, d.group)));
    nodes.push(
      h(
        'div',
        { class: 'cards' },
        card('Students with usage', 'totals.students', d.totals.students),
        card('Hours', 'totals.hours', d.totals.hours, 'h'),
        card('Cost', 'totals.gross', d.totals.gross, d.currency),
        card('Charged after allowances', 'totals.net', d.totals.net, d.currency, `Attributed to this course (${d.attribution} rule): ${d.totals.attributed} ${d.currency}`),
        card('Idle but billed', 'totals.idle_hours', d.totals.idle_hours, 'h', 'Hours servers ran after their last activity.'),
      ),
    );
    const used = d.by_day.some((x) => Number(x.hours) > 0);
    nodes.push(section('Cost per day', used ? chart('Course cost per day', 'bar', d.by_day.map((x) => x.day), [{ label: `Cost (${d.currency})`, data: d.by_day.map((x) => x.cost) }]) : empty('No usage in this period.')));
    nodes.push(
      section(
        'Top users',
        d.top.length ? h('ol', { id: 'top' }, d.top.map((t) => h('li', {}, h('strong', {}, t.user), ` — ${t.net} ${d.currency}, ${hoursText(t.hours)}`))) : empty('No usage in this period.'),
      ),
    );
    nodes.push(
      section(
        'Near or over budget',
        d.at_risk.length
          ? table('Students at 75 % of their budget or more', [{ label: 'Student', get: (r) => r.user }, { label: 'Used', n: 1, get: (r) => r.used }, { label: 'Limit', n: 1, get: (r) => r.limit }, { label: 'Unit', get: (r) => r.unit }, { label: '%', n: 1, get: (r) => r.percent }], d.at_risk, { id: 'at-risk' })
          : empty('No student is near their budget.'),
      ),
    );
    const s = d.students;
    const csv = new URLSearchParams(range());
    const exportLink = view === 'shared' ? null : h('a', { class: 'button', id: 'csv', href: `${prefix}api/dashboard/groups/${encodeURIComponent(d.group)}/students.csv?${csv}`, download: '' }, 'Export CSV');
    nodes.push(
      section(
        'Students',
        exportLink,
        s.total
          ? table(
              `Students ${(s.page - 1) * s.per_page + 1}–${Math.min(s.total, s.page * s.per_page)} of ${s.total}`,
              [
                { label: 'Student', sort: 'user', get: (r) => r.user },
                { label: 'Hours', n: 1, sort: 'hours', field: 'hours', get: (r) => hrs(null, r.hours) },
                { label: `Cost (${d.currency})`, n: 1, sort: 'gross', field: 'gross', get: (r) => r.gross },
                { label: `Charged (${d.currency})`, n: 1, sort: 'net', field: 'net', get: (r) => r.net },
                { label: 'Idle', n: 1, sort: 'idle_hours', field: 'idle_hours', get: (r) => hrs(null, r.idle_hours) },
                { label: 'Budget used', n: 1, sort: 'budget_percent', field: 'budget_percent', get: (r) => (r.budget_percent === null ? '—' : `${r.budget_percent} %`) },
              ],
              s.rows,
              { id: 'students', sort: (key, order) => ((state.sort = key), (state.order = order), (state.page = 1), load(`[data-sort="${key}"]`)) },
            )
          : empty('No student used this course in this period.'),
        s.pages > 1
          ? h(
              'nav',
              { class: 'pager', 'aria-label': 'Student pages' },
              h('button', { type: 'button', id: 'prev', disabled: s.page <= 1, onclick: () => ((state.page -= 1), load('#prev')) }, 'Previous'),
              h('span', { id: 'page-info' }, ` Page ${s.page} of ${s.pages} `),
              h('button', { type: 'button', id: 'next', disabled: s.page >= s.pages, onclick: () => ((state.page += 1), load('#next')) }, 'Next'),
            )
          : null,
      ),
    );
    if (view === 'shared') nodes.push(h('p', { class: 'note' }, `Read-only link; it expires ${d.shared.expires_at.slice(0, 16).replace('T', ' ')} UTC.`));
    else nodes.push(sharesSection(d.group));
    return nodes;
  }

  function sharesSection(group) {
    const out = h('div', { id: 'share-result', 'aria-live': 'polite' });
    const days = h('select', { id: 'share-days' }, [1, 7, 30].map((n) => h('option', { value: n, selected: n === 7 }, `${n} day${n > 1 ? 's' : ''}`)));
    const create = async () => {
      try {
        const s = await api('api/dashboard/shares', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ group, days: Number(days.value) }) });
        const url = `${location.origin}${s.url}`;
        out.replaceChildren(h('label', { for: 'share-url' }, 'Read-only link (anyone with it can view this course until it expires or an admin revokes it): '), h('input', { id: 'share-url', readonly: true, value: url, size: 40 }));
        await listShares();
      } catch (err) {
        out.replaceChildren(h('p', { role: 'alert' }, err.message));
      }
    };
    const list = h('div', { id: 'shares' });
    async function listShares() {
      try {
        const { shares } = await api('api/dashboard/shares');
        list.replaceChildren(sharesTable(shares.filter((s) => s.group === group), listShares));
      } catch (err) {
        list.replaceChildren(h('p', { role: 'alert' }, err.message));
      }
    }
    listShares();
    return section('Share', h('p', {}, h('label', { for: 'share-days' }, 'Valid for '), days, ' ', h('button', { type: 'button', id: 'share-create', onclick: create }, 'Create read-only link')), out, list);
  }

  function sharesTable(shares, refresh) {
    if (!shares.length) return empty('No share links.');
    return table(
      'Share links',
      [
        { label: 'Course', get: (s) => s.group },
        { label: 'Created by', get: (s) => s.created_by },
        { label: 'Expires', get: (s) => s.expires_at.slice(0, 16).replace('T', ' ') },
        {
          label: 'State',
          get: (s) =>
            s.revoked_at
              ? `revoked by ${s.revoked_by}`
              : Date.parse(s.expires_at) < Date.now()
                ? 'expired'
                : h('button', { type: 'button', class: 'revoke', 'data-id': s.id, onclick: async () => { try { await api(`api/dashboard/shares/${s.id}`, { method: 'DELETE' }); await refresh(); } catch (err) { showError(err); } } }, 'Revoke'),
        },
      ],
      shares,
      { id: 'share-list' },
    );
  }

  function adminView(d, settings) {
    const nodes = [];
    nodes.push(
      h(
        'div',
        { class: 'cards' },
        card('Users with usage', 'totals.users', d.totals.users),
        card('Running now', 'active_users.running_now', d.active_users.running_now, 'users'),
        card('Hours', 'totals.hours', d.totals.hours, 'h'),
        card('Cost', 'totals.gross', d.totals.gross, d.currency),
        card('Charged after allowances', 'totals.net', d.totals.net, d.currency),
        card(`Forecast for ${d.forecast.month}`, 'forecast.projected', d.forecast.projected, d.currency, `So far ${d.forecast.so_far} ${d.currency} in ${d.forecast.days_elapsed} of ${d.forecast.days_in_month} days, at the same pace.`),
      ),
    );
    const used = d.by_day.some((x) => Number(x.hours) > 0);
    const days = d.cost_by_group.days;
    nodes.push(section('Cost over time by group', used ? chart('Cost per day by group', 'bar', days, d.cost_by_group.series.map((s) => ({ label: s.name, data: s.costs })), { stacked: true }) : empty('No usage in this period.')));
    nodes.push(section('Cost over time by profile', used ? chart('Cost per day by profile', 'bar', d.cost_by_profile.days, d.cost_by_profile.series.map((s) => ({ label: s.name, data: s.costs })), { stacked: true }) : empty('No usage in this period.')));
    nodes.push(section('Active users', used ? chart('Users with usage per day', 'line', d.active_users.by_day.map((x) => x.day), [{ label: 'Users', data: d.active_users.by_day.map((x) => x.users) }]) : empty('No usage in this period.')));
    nodes.push(
      section(
        'Budgets at risk',
        d.budgets_at_risk.rows.length
          ? table(
              `Budgets at 75 % or more (${d.budgets_at_risk.total})`,
              [{ label: 'Subject', get: (r) => `${r.subject} (${r.kind})` }, { label: 'Used', n: 1, get: (r) => r.used }, { label: 'Limit', n: 1, get: (r) => r.limit }, { label: 'Unit', get: (r) => r.unit }, { label: '%', n: 1, get: (r) => r.percent }],
              d.budgets_at_risk.rows,
              { id: 'budgets-at-risk' },
            )
          : empty('No budget is at risk.'),
      ),
    );
    nodes.push(
      section(
        'Groups',
        d.groups.length
          ? table(`Cost per group (${d.attribution} rule)`, [{ label: 'Group', get: (r) => h('a', { href: `${prefix}dashboard/course?group=${encodeURIComponent(r.group)}` }, r.group) }, { label: 'Users', n: 1, get: (r) => r.users }, { label: `Charged (${d.currency})`, n: 1, field: 'net', get: (r) => r.net }], d.groups, { id: 'groups' })
          : empty('No group used the hub in this period.'),
      ),
    );
    const shareList = h('div', { id: 'admin-shares' });
    const refreshShares = async () => {
      try {
        shareList.replaceChildren(sharesTable((await api('api/dashboard/shares')).shares, refreshShares));
      } catch (err) {
        shareList.replaceChildren(h('p', { role: 'alert' }, err.message));
      }
    };
    refreshShares();
    nodes.push(section('Share links', shareList));
    nodes.push(settingsSection(settings));
    return nodes;
  }

  function settingsSection(settings) {
    const area = h('textarea', { id: 'settings-draft', rows: 16, spellcheck: 'false', 'aria-describedby': 'settings-help' }, JSON.stringify(settings.editable, null, 2));
    const note = h('input', { id: 'settings-note', type: 'text', maxlength: '500', autocomplete: 'off' });
    const result = h('div', { id: 'settings-result', 'aria-live': 'polite' });
    const issuesList = (issues) => h('ul', {}, issues.map((i) => h('li', {}, h('code', {}, i.path || '(top)'), `: ${i.message}`)));
    const bad = (...children) => result.replaceChildren(h('div', { role: 'alert', class: 'bad' }, ...children));
    const draft = () => {
      try {
        return JSON.parse(area.value);
      } catch (err) {
        bad(h('p', {}, `Not valid JSON: ${err.message}`));
        return undefined;
      }
    };
    const validate = async () => {
      const parsed = draft();
      if (parsed === undefined) return;
      try {
        const r = await api('api/dashboard/settings/validate', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(parsed) });
        if (r.valid) result.replaceChildren(h('p', { class: 'good' }, 'Valid. Save it to put it in force.'));
        else bad(h('p', {}, 'Not valid:'), issuesList(r.issues));
      } catch (err) {
        bad(h('p', {}, err.message));
      }
    };
    const save = async (e) => {
      e.preventDefault();
      const parsed = draft();
      if (parsed === undefined) return;
      try {
        const r = await api('api/dashboard/settings', {
          method: 'PUT',
          headers: { 'content-type': 'application/json', 'if-match': `"v${settings.newest ?? settings.version}"` },
          body: JSON.stringify({ editable: parsed, note: note.value }),
        });
        // Reload the view: figures, budgets at risk and this form now follow the new version.
        await load();
        const again = document.getElementById('settings-result');
        if (again) again.replaceChildren(h('p', { class: 'good', role: 'status' }, `Saved as version ${r.version}. It is in force now.`));
      } catch (err) {
        if (err.status === 422 && err.data && err.data.issues) bad(h('p', {}, 'Not saved, the settings are not valid:'), issuesList(err.data.issues));
        else if (err.status === 412) bad(h('p', {}, `Not saved: ${err.message}.`), h('p', {}, h('button', { type: 'button', onclick: () => load() }, 'Reload the settings')));
        else bad(h('p', {}, `Not saved: ${err.message}`));
      }
    };
    const when = (t) => t.slice(0, 16).replace('T', ' ');
    return section(
      'Rate cards and budgets',
      h(
        'p',
        { id: 'settings-version' },
        `Version ${settings.version}, from the ${settings.source} (${settings.author === settings.source ? '' : `${settings.author}, `}${when(settings.created_at)} UTC)${settings.note ? `: ${settings.note}` : ''}.`,
      ),
      ...(settings.skipped?.length
        ? [
            h(
              'p',
              { id: 'settings-skipped', class: 'bad', role: 'alert' },
              `Not in force because not valid: ${settings.skipped.map((v) => `version ${v.id} (${v.reason})`).join('; ')}. Save a valid version to replace it.`,
            ),
          ]
        : []),
      h(
        'p',
        { id: 'settings-help' },
        `Edit the rate cards and budgets below (JSON), validate, then save: the new version is in force at once, for prices, budgets and the spawn check. Currency (${settings.currency}), attribution (${settings.attribution.rule}) and the budget webhook stay in the community file; a new community file wins when it is deployed.`,
      ),
      h(
        'form',
        { id: 'settings-form', onsubmit: save },
        h('label', { for: 'settings-draft' }, 'Rate cards and budgets (JSON)'),
        area,
        h('label', { for: 'settings-note' }, 'Note for the history (optional)'),
        note,
        h('p', {}, h('button', { type: 'button', id: 'settings-validate', onclick: validate }, 'Validate'), ' ', h('button', { type: 'submit', id: 'settings-save' }, 'Save')),
      ),
      result,
      h('h3', {}, 'History'),
      h(
        'ol',
        { id: 'settings-history', reversed: true },
        settings.history.map((v) => h('li', {}, `Version ${v.id}: ${v.author === v.source ? v.source : `${v.source}, ${v.author}`}, ${when(v.created_at)} UTC${v.note ? ` (${v.note})` : ''}`)),
      ),
    );
  }

  // ---- navigation and loading ------------------------------------------------------------------
  let access = null;
  async function nav() {
    if (view === 'shared') return;
    try {
      access = await api('api/dashboard/access');
    } catch {
      access = { admin: false, groups: [] };
    }
    const links = [['student', '', 'My usage']];
    if (access.admin || access.groups.length) links.push(['course', 'dashboard/course', 'Courses']);
    if (access.admin) links.push(['admin', 'dashboard/admin', 'Hub']);
    document.getElementById('nav').replaceChildren(h('ul', {}, links.map(([v, href, label]) => h('li', {}, h('a', { href: `${prefix}${href}`, ...(v === view ? { 'aria-current': 'page' } : {}) }, label)))));
  }

  let seq = 0;
  async function load(focusAfter) {
    const mine = ++seq;
    syncUrl();
    clearError();
    setLoading(true);
    const r = new URLSearchParams(range());
    try {
      let nodes;
      if (view === 'student') nodes = studentView(await api(`api/dashboard/me?${r}`));
      else if (view === 'admin') {
        const [d, settings] = await Promise.all([api(`api/dashboard/hub?${r}`), api('api/dashboard/settings')]);
        nodes = adminView(d, settings);
      } else {
        const q = new URLSearchParams({ ...Object.fromEntries(r), page: String(state.page), sort: state.sort, order: state.order });
        if (view === 'shared') {
          if (!shareToken) throw new ApiError(403, 'this page needs the full share link, including the part after #');
          nodes = courseView(await api(`api/dashboard/shared?${q}`), null);
        } else {
          if (!access) await nav();
          if (!state.group) state.group = access.groups[0] || '';
          if (!state.group) {
            nodes = [empty('You manage no course with usage yet.')];
          } else nodes = courseView(await api(`api/dashboard/groups/${encodeURIComponent(state.group)}?${q}`), access.groups);
        }
      }
      if (mine !== seq) return;
      clearCharts();
      content.replaceChildren(...nodes);
      statusEl.textContent = 'Loaded.';
      content.setAttribute('aria-busy', 'false');
      body.dataset.loaded = String(mine);
      if (focusAfter) {
        const f = document.querySelector(focusAfter);
        if (f) f.focus();
      }
    } catch (err) {
      if (mine !== seq) return;
      setLoading(false);
      clearCharts();
      content.replaceChildren();
      showError(err);
      body.dataset.loaded = `error-${mine}`;
    }
  }

  // ---- period picker ---------------------------------------------------------------------------
  periodSel.value = state.period;
  customBox.hidden = state.period !== 'custom';
  fromIn.value = state.from;
  toIn.value = state.to;
  periodSel.addEventListener('change', () => {
    customBox.hidden = periodSel.value !== 'custom';
    if (periodSel.value === 'custom' && !fromIn.value) {
      const r = range();
      fromIn.value = r.from;
      toIn.value = addDays(r.to, -1);
    }
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    state.period = periodSel.value;
    if (state.period === 'custom') {
      if (!fromIn.value || !toIn.value || toIn.value < fromIn.value) {
        showError(new ApiError(400, 'choose a first and a last day, the last on or after the first.'));
        return;
      }
      state.from = fromIn.value;
      state.to = toIn.value;
    }
    state.page = 1;
    load();
  });

  nav().then(() => load());
})();
