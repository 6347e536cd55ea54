// Audit (admin): the trail of every change, newest page first, with paging by `next`.
import { api, h, session, fmtTime } from '../core.js';

export async function render(main) {
  if (!session.can('admin')) { main.replaceChildren(h('h1', { text: 'Audit' }), h('p.error', { text: 'The audit trail needs the admin role.' })); return; }
  const body = h('tbody');
  const more = h('button#audit-more', { type: 'button', hidden: true }, 'Older entries');
  const err = h('p.error', { hidden: true, role: 'alert' });
  main.replaceChildren(h('h1', { text: 'Audit trail' }), err,
    h('div.table-wrap', {}, h('table#audit', {},
      h('thead', {}, h('tr', {}, ...['Time', 'Who', 'From', 'Action', 'Target', 'Outcome', 'Detail'].map((t) => h('th', { scope: 'col', text: t })))),
      body)), more);
  let next = null;
  async function page() {
    try {
      const r = await api('GET', '/api/v1/audit?limit=200' + (next ? '&after=' + encodeURIComponent(next) : ''));
      const rows = r.entries || r.audit || r.events || [];
      body.append(...rows.map((e) => h('tr', {},
        h('td', { text: fmtTime(e.ts || e.time) }), h('td', { text: e.actor ?? e.user ?? '' }), h('td', { text: e.source ?? e.from ?? '' }),
        h('td', { text: e.action ?? '' }), h('td', { text: e.target ?? '' }),
        h('td', { class: e.outcome && e.outcome !== 'ok' ? 'bad' : '', text: e.outcome ?? '' }),
        h('td', {}, h('code', { text: e.detail ? JSON.stringify(e.detail) : '' })))));
      next = r.next || null;
      more.hidden = !next;
    } catch (e) { err.textContent = e.message; err.hidden = false; }
  }
  more.addEventListener('click', page);
  await page();
}
