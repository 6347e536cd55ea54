// Overview: the whole gateway at a glance. Devices and bus/WAL figures are polled every
// 2 s (they are counters, not events); alarms arrive over the WebSocket as they change.
import { api, h, live, fmtBytes, fmtAge, fmtTime, stateBadge, PRIORITIES, prioBadge } from '../core.js';

/** Prometheus text → { metric: [{labels, value}] } for the few families this page shows. */
function parseMetrics(text, prefix) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith(prefix)) continue;
    const m = /^([a-z_:]+)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] || '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    (out[m[1]] ||= []).push({ labels, value: Number(m[3]) });
  }
  return out;
}

function deviceState(d) {
  const st = d.status;
  if (!d.enabled) return stateBadge('disabled', 'muted');
  if (!st) return stateBadge('stopped', 'muted');
  if (st.state === 'failed') return stateBadge('failed', 'bad');
  if (!st.connected) return stateBadge('disconnected', 'bad');
  return stateBadge(st.last_error ? 'polling, errors' : 'polling', st.last_error ? 'warn' : 'good');
}

export async function render(main) {
  const devBody = h('tbody');
  const conBody = h('tbody');
  const busDl = h('dl.kv#bus-figures');
  const alarmDl = h('dl.kv#alarm-counts');
  const err = h('p.error', { hidden: true, role: 'alert' });
  main.replaceChildren(
    h('h1', { text: 'Overview' }), err,
    h('div.grid', {},
      h('section.panel', {}, h('h2', { text: 'Active alarms' }), alarmDl, h('p', {}, h('a', { href: '#/alarms', text: 'Go to alarms' }))),
      h('section.panel', {}, h('h2', { text: 'Bus and WAL' }), busDl)),
    h('section.panel', {}, h('h2', { text: 'Devices' }), h('div.table-wrap', {}, h('table#overview-devices', {},
      h('thead', {}, h('tr', {}, ['Device', 'Driver', 'State', 'Values/s', 'Polls', 'Failures', 'Last poll', 'Last error']
        .map((t, i) => h('th' + (i >= 3 && i <= 5 ? '.num' : ''), { scope: 'col', text: t })))),
      devBody))),
    h('section.panel', {}, h('h2', { text: 'Connectors' }), h('div.table-wrap', {}, h('table#overview-connectors', {},
      h('thead', {}, h('tr', {}, ['Connector', 'State', 'Since', 'Backlog (values)', 'Backlog (bytes)', 'Acked'].map((t) => h('th', { scope: 'col', text: t })))),
      conBody))),
  );

  const prev = new Map(); // device → {polls, t} for values/s
  const down = new Map(); // connector → first time seen disconnected
  let alarms = new Map();
  let timer;

  function paintAlarms() {
    const counts = Object.fromEntries(PRIORITIES.map((p) => [p, { all: 0, unacked: 0 }]));
    for (const a of alarms.values()) {
      const c = counts[a.priority];
      if (!c) continue;
      c.all++;
      if (/unack/.test(a.state)) c.unacked++;
    }
    alarmDl.replaceChildren(...PRIORITIES.flatMap((p) => [
      h('dt', {}, prioBadge(p)),
      h('dd', { 'data-priority': p, text: `${counts[p].all} active, ${counts[p].unacked} unacknowledged` }),
    ]));
  }

  async function refresh() {
    try {
      const [info, devs, metrics, act] = await Promise.all([
        api('GET', '/api/v1/system/info'),
        api('GET', '/api/v1/devices'),
        api('GET', '/metrics').catch(() => ''),
        api('GET', '/api/v1/alarms/active').catch(() => null),
      ]);
      err.hidden = true;
      if (act) { alarms = new Map(act.alarms.map((a) => [a.id, a])); paintAlarms(); }
      const b = info.bus, w = info.wal;
      const m = parseMetrics(typeof metrics === 'string' ? metrics : '', 'gateway_');
      const p99 = flushP99(m);
      busDl.replaceChildren(...[
        ['Preset', info.preset], ['Uptime', fmtAge(info.uptime_s)],
        ['Ring fill', `${((b.ring_batches / Math.max(1, b.capacity)) * 100).toFixed(1)} % (${b.ring_frames} frames)`],
        ['Publishers', b.paused ? 'PAUSED (backpressure)' : 'flowing'],
        ['WAL size', w ? fmtBytes(w.disk_bytes) + ` in ${w.segments} segments` : 'off (memory bus)'],
        ['WAL state', w ? (w.failing ? 'FAILING' : 'ok') : '—'],
        ['WAL flush p99', p99 == null ? '—' : `≤ ${p99} ms`],
        ['Tags with values', info.tags_with_values], ['WebSocket clients', info.ws_connections],
      ].flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: String(v) })]));

      const now = performance.now();
      devBody.replaceChildren(...devs.devices.map((d) => {
        const st = d.status || {};
        const p = prev.get(d.name);
        const tags = (d.tags || []).length || 1;
        const rate = p && st.polls >= p.polls ? ((st.polls - p.polls) * tags) / ((now - p.t) / 1000) : null;
        prev.set(d.name, { polls: st.polls || 0, t: now });
        return h('tr', { 'data-device': d.name },
          h('th', { scope: 'row', text: d.name }), h('td', { text: d.driver }), h('td', {}, deviceState(d)),
          h('td.num', { text: rate == null ? '—' : rate.toFixed(1) }), h('td.num', { text: st.polls ?? '—' }),
          h('td.num', { text: st.failures ?? '—' }), h('td', { text: fmtTime(st.last_poll) }),
          h('td.bad', { text: st.last_error || '' }));
      }));
      if (!devs.devices.length) devBody.append(h('tr', {}, h('td', { colspan: 8, text: 'No devices configured.' })));

      const names = new Set((m.gateway_connector_connected || []).map((x) => x.labels.connector || Object.values(x.labels)[0]));
      const get = (fam, n) => (m[fam] || []).find((x) => (x.labels.connector || Object.values(x.labels)[0]) === n)?.value;
      conBody.replaceChildren(...[...names].sort().map((n) => {
        const up = get('gateway_connector_connected', n) === 1;
        if (up) down.delete(n); else if (!down.has(n)) down.set(n, Date.now());
        const replay = get('gateway_connector_replaying', n) === 1;
        return h('tr', { 'data-connector': n }, h('th', { scope: 'row', text: n }),
          h('td', {}, up ? stateBadge(replay ? 'connected, replaying' : 'connected', replay ? 'warn' : 'good') : stateBadge('DISCONNECTED', 'bad')),
          h('td', { text: up ? '' : 'down for ' + fmtAge(Math.round((Date.now() - down.get(n)) / 1000)) }),
          h('td.num', { text: get('gateway_connector_backlog_frames', n) ?? '—' }),
          h('td.num', { text: fmtBytes(get('gateway_connector_backlog_bytes', n)) }),
          h('td.num', { text: get('gateway_connector_values_acked_total', n) ?? '—' }));
      }));
      if (!names.size) conBody.append(h('tr', {}, h('td', { colspan: 6, text: 'No connectors configured.' })));
    } catch (e) {
      err.textContent = 'Could not refresh: ' + e.message;
      err.hidden = false;
    }
    timer = setTimeout(refresh, 2000);
  }

  // A transition's frame does not carry the whole alarm view: ask for the active list again.
  let pending;
  const off = live.on((msg) => {
    if (msg.type === 'alarm' || msg.type === 'alarms') {
      clearTimeout(pending);
      pending = setTimeout(async () => {
        try { alarms = new Map((await api('GET', '/api/v1/alarms/active')).alarms.map((a) => [a.id, a])); paintAlarms(); } catch { /* next refresh */ }
      }, 150);
    }
  });
  paintAlarms();
  await refresh();
  return () => { clearTimeout(timer); clearTimeout(pending); off(); };
}

/** The WAL flush histogram's p99 as the upper bound of its bucket (ms). */
function flushP99(m) {
  const fam = Object.keys(m).find((k) => /wal.*flush.*_bucket$/.test(k));
  if (!fam) return null;
  const rows = m[fam].map((x) => ({ le: x.labels.le === '+Inf' ? Infinity : Number(x.labels.le), n: x.value })).sort((a, b) => a.le - b.le);
  const total = rows.length ? rows[rows.length - 1].n : 0;
  if (!total) return null;
  const hit = rows.find((r) => r.n >= total * 0.99);
  if (!hit || hit.le === Infinity) return '> ' + rows[rows.length - 2]?.le;
  // The seed's buckets are in ms already when the name says _ms; otherwise seconds.
  return /_ms_/.test(fam) ? hit.le : +(hit.le * 1000).toFixed(3);
}
