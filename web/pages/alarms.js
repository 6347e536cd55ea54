// Alarms: the active list (the API sorts it: highest priority first, newest first), ack of
// one or many with a comment, shelving with a duration and a reason, and the journal.
// Refetched on every alarm message of the WebSocket rather than patched, so the table
// always shows what the server holds.
import { api, h, live, session, toast, fmtValue, fmtTime, prioBadge, alarmStateBadge, PRIORITIES } from '../core.js';

export async function render(main) {
  const op = session.can('operator');
  const body = h('tbody');
  const all = h('input#alarm-select-all', { type: 'checkbox', 'aria-label': 'Select all', disabled: !op });
  const comment = h('input#ack-comment', { placeholder: 'optional', size: 24, disabled: !op });
  const result = h('div#ack-result', { role: 'status', 'aria-live': 'polite' });
  const ackBtn = h('button.primary#ack-selected', { type: 'button', disabled: !op, onclick: ackSelected }, 'Acknowledge selected');
  const journal = h('tbody');
  const jPrio = h('select#journal-priority', {}, h('option', { value: '', text: 'all' }), ...PRIORITIES.slice().reverse().map((p) => h('option', { value: p, text: `${p} and above` })));
  const jTag = h('input#journal-tag', { placeholder: 'tag', size: 16 });
  const jFrom = h('select#journal-from', {}, ...[['-1h', 'last hour'], ['-24h', 'last 24 h'], ['-7d', 'last 7 days']].map(([v, t]) => h('option', { value: v, text: t, selected: v === '-24h' })));

  main.replaceChildren(h('h1', { text: 'Alarms' }),
    h('section.panel', {}, h('h2', { text: 'Active' }),
      op ? h('div.toolbar', {}, h('label', {}, 'Comment', comment), ackBtn) : h('p.muted#alarm-role-note', { text: 'Acknowledging and shelving need the operator role.' }),
      result,
      h('div.table-wrap', {}, h('table#alarms-active', {},
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, all), ...['Priority', 'State', 'Alarm', 'Message', 'Value', 'Since', 'Acked by', ''].map((t) => h('th', { scope: 'col', text: t })))),
        body))),
    h('section.panel', {}, h('h2', { text: 'Journal' }),
      h('form.toolbar', { onsubmit: (e) => { e.preventDefault(); loadJournal(); } },
        h('label', {}, 'Since', jFrom), h('label', {}, 'Priority', jPrio), h('label', {}, 'Tag', jTag), h('button', { type: 'submit' }, 'Show')),
      h('div.table-wrap', {}, h('table#alarm-journal', {},
        h('thead', {}, h('tr', {}, ...['Time', 'Event', 'State', 'Priority', 'Alarm', 'Value', 'User', 'Comment'].map((t) => h('th', { scope: 'col', text: t })))),
        journal))));

  all.addEventListener('change', () => body.querySelectorAll('input[type=checkbox]').forEach((c) => { c.checked = all.checked; }));

  async function load() {
    try {
      const { alarms } = await api('GET', '/api/v1/alarms/active');
      const keep = new Set([...body.querySelectorAll('input:checked')].map((c) => c.value));
      body.replaceChildren(...alarms.map((a) => h('tr', { 'data-alarm': a.id },
        h('td', {}, h('input', { type: 'checkbox', value: a.id, checked: keep.has(a.id), disabled: !op, 'aria-label': 'Select ' + a.id })),
        h('td', {}, prioBadge(a.priority)), h('td', {}, alarmStateBadge(a.state)),
        h('th', { scope: 'row', text: a.id }), h('td', { text: a.message }),
        h('td.num', { text: fmtValue(a.value) + (a.current !== undefined ? ` (now ${fmtValue(a.current)})` : '') }),
        h('td', { text: fmtTime(a.since) }),
        h('td', { text: a.acked_by || (a.shelved_until ? `shelved until ${fmtTime(a.shelved_until)}: ${a.shelve_reason || ''}` : '') }),
        h('td', {}, op ? [
          /unack/.test(a.state) ? h('button', { type: 'button', onclick: () => ack([a.id]) }, 'Ack') : null, ' ',
          a.state === 'shelved' ? h('button', { type: 'button', onclick: () => unshelve(a.id) }, 'Unshelve') : h('button', { type: 'button', onclick: () => shelveForm(a) }, 'Shelve'),
        ] : null))));
      if (!alarms.length) body.append(h('tr', {}, h('td', { colspan: 9, text: 'No active alarms.' })));
    } catch (e) { result.className = 'error'; result.textContent = e.message; }
  }

  async function ack(ids) {
    result.className = ''; result.textContent = 'Acknowledging…';
    try {
      const r = await api('POST', '/api/v1/alarms/ack', { ids, comment: comment.value || undefined });
      const refused = (r.refused || []).map((x) => `${x.id}: ${x.error}`).join('; ');
      result.className = refused ? 'error' : 'ok';
      result.textContent = `Acknowledged ${(r.acked || []).length} of ${ids.length}.` + (refused ? ' Not acknowledged: ' + refused : '');
    } catch (e) { result.className = 'error'; result.textContent = `Refused (${e.status}): ${e.message}`; }
    load(); loadJournal();
  }
  function ackSelected() {
    const ids = [...body.querySelectorAll('input:checked')].map((c) => c.value);
    if (!ids.length) { result.className = 'error'; result.textContent = 'Select the alarms to acknowledge first.'; return; }
    ack(ids);
  }
  async function unshelve(id) {
    try { await api('POST', `/api/v1/alarms/${encodeURIComponent(id)}/unshelve`, {}); toast(`${id} unshelved.`); } catch (e) { toast(e.message); }
    load();
  }
  function shelveForm(a) {
    const row = body.querySelector(`tr[data-alarm="${CSS.escape(a.id)}"]`);
    const dur = h('select', { 'aria-label': 'Duration' }, ...['15m', '1h', '8h', '24h', '7d'].map((d) => h('option', { value: d, text: d, selected: d === '8h' })));
    const reason = h('input', { 'aria-label': 'Reason', placeholder: 'reason (required)', required: true, size: 24 });
    const err = h('span.field-error', { role: 'alert' });
    const tr = h('tr', {}, h('td', { colspan: 9 }, h('form.toolbar', { onsubmit: async (e) => {
      e.preventDefault();
      try {
        await api('POST', `/api/v1/alarms/${encodeURIComponent(a.id)}/shelve`, { duration: dur.value, reason: reason.value });
        toast(`${a.id} shelved for ${dur.value}.`);
        load();
      } catch (x) { err.textContent = x.message; }
    } }, `Shelve ${a.id} for `, dur, reason, h('button', { type: 'submit' }, 'Shelve'), h('button', { type: 'button', onclick: () => tr.remove() }, 'Cancel'), err)));
    row.after(tr);
    reason.focus();
  }

  async function loadJournal() {
    const q = new URLSearchParams({ from: jFrom.value, limit: '200' });
    if (jPrio.value) q.set('priority', jPrio.value);
    if (jTag.value.trim()) q.set('tag', jTag.value.trim());
    try {
      const { events } = await api('GET', '/api/v1/alarms/events?' + q);
      journal.replaceChildren(...events.map((e) => h('tr', {},
        h('td', { text: fmtTime(e.ts) }), h('td', { text: e.event }), h('td', {}, alarmStateBadge(e.state || '')),
        h('td', {}, prioBadge(e.priority)), h('td', { text: e.id }), h('td.num', { text: fmtValue(e.value) }),
        h('td', { text: e.user || '' }), h('td', { text: e.comment || '' }))));
      if (!events.length) journal.append(h('tr', {}, h('td', { colspan: 8, text: 'No events.' })));
    } catch (e) {
      journal.replaceChildren(h('tr', {}, h('td', { colspan: 8, text: 'Journal unavailable: ' + e.message })));
    }
  }

  let pending;
  const off = live.on((m) => {
    if (m.type === 'alarm' || m.type === 'alarms') { clearTimeout(pending); pending = setTimeout(() => { load(); loadJournal(); }, 150); }
  });
  await Promise.all([load(), loadJournal()]);
  // The journal is written to history in batches (about once a second), after the WebSocket
  // told of the transition: read it again now and then so a new entry appears by itself.
  const journalTimer = setInterval(loadJournal, 3000);
  return () => { off(); clearTimeout(pending); clearInterval(journalTimer); };
}
