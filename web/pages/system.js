// System: version, uptime, preset, bus and WAL figures as the API reports them, who is
// signed in, links to the machine-readable documents, and (for admins) the configuration
// as loaded, one collapsible section each; the server masks its secrets as ***.
import { api, h, session, fmtAge, fmtBytes } from '../core.js';

export async function render(main) {
  const info = await api('GET', '/api/v1/system/info');
  const health = await fetch('/api/v1/system/health').then((r) => r.json().then((j) => ({ code: r.status, ...j }))).catch(() => ({ status: 'unreachable' }));
  const s = session.get();
  const rows = [
    ['Version', info.version], ['Uptime', fmtAge(info.uptime_s)], ['Health', health.status + (health.check ? ` (${health.check})` : '')],
    ['Bus preset', info.preset], ['Persistence', String(info.persistence)], ['Devices', info.devices],
    ['Tags with values', info.tags_with_values], ['WebSocket clients', info.ws_connections],
    ['WAL on disk', info.wal ? fmtBytes(info.wal.disk_bytes) : 'off'], ['WAL durable seq', info.wal?.durable_seq ?? '—'],
    ['Signed in as', `${s.user} (${s.role})`],
  ];
  main.replaceChildren(h('h1', { text: 'System' }),
    h('section.panel', {}, h('dl.kv#system-info', {}, ...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: String(v) })]))),
    h('section.panel', {}, h('h2', { text: 'Documents' }), h('ul', {},
      h('li', {}, h('a', { href: '/metrics', target: '_blank', rel: 'noopener', text: 'Prometheus metrics (/metrics)' })),
      h('li', {}, h('a', { href: '/api/openapi.json', target: '_blank', rel: 'noopener', text: 'OpenAPI description (/api/openapi.json)' })))),
    // Long and read rarely: folded, so the configuration below stays in reach.
    h('section.panel', {}, h('details', {}, h('summary', {}, h('strong', { text: 'Bus statistics (raw)' })),
      h('pre.config', { text: JSON.stringify(info.bus, null, 1) }))),
    await configPanel());
}

/** The configuration as loaded; only an admin may read it (the server refuses others too). */
async function configPanel() {
  if (!session.can('admin')) return null;
  const box = h('section.panel#system-config', {}, h('h2', { text: 'Configuration as loaded' }));
  try {
    const c = await api('GET', '/api/v1/system/config');
    box.append(h('p.muted', { text: `From ${c.source || 'the built-in default'}; defaults filled in, secrets shown as ***. The running values: a reload updates them, except sections that wait for a restart.` }));
    for (const [name, v] of Object.entries(c.config || {})) {
      const empty = Array.isArray(v) ? !v.length : !v || !Object.keys(v).length;
      box.append(h('details', { 'data-section': name },
        h('summary', {}, h('code', { text: Array.isArray(v) ? `[[${name}]]` : `[${name}]` }),
          Array.isArray(v) ? ` ${v.length} ${v.length === 1 ? 'entry' : 'entries'}` : empty ? ' (empty)' : ''),
        h('pre.config', { text: JSON.stringify(v, null, 2) })));
    }
  } catch (e) { box.append(h('p.error', { text: 'Could not read the configuration: ' + e.message })); }
  return box;
}
