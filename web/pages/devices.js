// Devices: the list with each driver's state, the per-driver form to create or edit a device
// (device-form.js), enable/disable, delete, each device's tags (add one with the same
// per-driver inputs), and for OPC UA a browse-and-import tree (browse.js).
import { api, h, session, toast, stateBadge } from '../core.js';
import { DRIVERS, deviceForm, tagTable } from './device-form.js';
import { browser } from './browse.js';

const COMMON = ['name', 'driver', 'enabled', 'poll_interval_ms', 'tags', 'source', 'status'];

function stateOf(d) {
  const st = d.status;
  if (!d.enabled) return stateBadge('disabled', 'muted');
  if (!st) return stateBadge('stopped', 'muted');
  if (st.state === 'failed') return stateBadge('failed', 'bad');
  return st.connected ? stateBadge('connected', 'good') : stateBadge('disconnected', 'bad');
}

export async function render(main) {
  const admin = session.can('admin');
  const list = h('tbody');
  const detail = h('div#device-detail');
  const err = h('p.error', { hidden: true, role: 'alert' });
  const formBox = h('section.panel#device-form-box', { hidden: true });
  const newBtn = h('button.primary#device-new', { type: 'button', onclick: () => openForm(null) }, 'New device');
  main.replaceChildren(h('h1', { text: 'Devices' }), err,
    admin ? h('div.toolbar', {}, newBtn) : h('p.muted', { text: 'Changing devices needs the admin role.' }),
    formBox,
    h('div.table-wrap', {}, h('table#devices', {},
      h('thead', {}, h('tr', {}, ['Name', 'Driver', 'State', 'Tags', 'Source', 'Poll (ms)', ''].map((t, i) => h('th' + (i >= 3 && i <= 5 ? '.hide-narrow' : ''), { scope: 'col', text: t })))),
      list)),
    detail);

  async function load() {
    try {
      const { devices } = await api('GET', '/api/v1/devices');
      err.hidden = true;
      list.replaceChildren(...devices.map((d) => {
        const fromFile = d.source === 'config';
        const why = fromFile ? 'Defined in the configuration file; change it there.' : undefined;
        return h('tr', { 'data-device': d.name },
          h('th', { scope: 'row' }, h('button.link', { type: 'button', onclick: () => showTags(d), 'aria-label': `Tags of ${d.name}` }, d.name)),
          h('td', { text: d.driver }), h('td', {}, stateOf(d), d.status?.last_error ? h('div.bad', { text: d.status.last_error }) : null),
          // On a phone the actions matter more than counts and origins (the tags list has them).
          h('td.hide-narrow', { text: String((d.tags || []).length) }), h('td.hide-narrow', { text: d.source }), h('td.hide-narrow', { text: String(d.poll_interval_ms ?? '') }),
          h('td', {}, admin ? [
            h('button', { type: 'button', disabled: fromFile, title: why, onclick: () => openForm(d) }, 'Edit'), ' ',
            h('button', { type: 'button', disabled: fromFile, title: why, onclick: () => toggle(d) }, d.enabled ? 'Disable' : 'Enable'), ' ',
            h('button.danger', { type: 'button', disabled: fromFile, title: why, onclick: () => remove(d) }, 'Delete'),
          ] : null));
      }));
      if (!devices.length) list.append(h('tr', {}, h('td', { colspan: 7, text: 'No devices yet.' })));
    } catch (e) { err.textContent = e.message; err.hidden = false; }
  }

  function body(d) {
    const b = { name: d.name, driver: d.driver, enabled: d.enabled, poll_interval_ms: d.poll_interval_ms, tags: d.tags || [] };
    for (const [k, v] of Object.entries(d)) if (!COMMON.includes(k)) b[k] = v;
    return b;
  }

  async function toggle(d) {
    try { await api('PUT', '/api/v1/devices/' + encodeURIComponent(d.name), { ...body(d), enabled: !d.enabled }); toast(`${d.name} ${d.enabled ? 'disabled' : 'enabled'}.`); }
    catch (e) { toast(`Could not change ${d.name}: ${e.message}`); }
    load();
  }

  async function remove(d) {
    if (!confirm(`Delete device ${d.name} and its ${(d.tags || []).length} tags?`)) return;
    try { await api('DELETE', '/api/v1/devices/' + encodeURIComponent(d.name)); toast(`${d.name} deleted.`); detail.replaceChildren(); }
    catch (e) { toast(`Could not delete ${d.name}: ${e.message}`); }
    load();
  }

  function openForm(d) {
    const editing = !!d;
    const f = deviceForm(d, {
      save: (payload) => (editing ? api('PUT', '/api/v1/devices/' + encodeURIComponent(d.name), payload) : api('POST', '/api/v1/devices', payload)),
      done: (payload) => { toast(`Device ${payload.name} ${editing ? 'saved' : 'created'}.`); formBox.hidden = true; load(); },
      cancel: () => { formBox.hidden = true; },
    });
    formBox.replaceChildren(h('h2', { text: editing ? `Edit ${d.name}` : 'New device' }), f.form);
    formBox.hidden = false;
    f.focus();
  }

  async function showTags(d) {
    const fromFile = d.source === 'config';
    const rows = (d.tags || []).map((t) => {
      const { name, writable, ...rest } = t;
      return h('tr', {}, h('th', { scope: 'row', text: name }), h('td', { text: writable ? 'writable' : 'read only' }),
        h('td', {}, h('code', { text: JSON.stringify(rest) })),
        h('td', {}, h('a', { href: `#/tags?pattern=${encodeURIComponent(d.name + '.' + name)}`, text: 'Live' }), ' ',
          admin && !fromFile ? h('button.danger', { type: 'button', onclick: async () => {
            if (!confirm(`Delete tag ${d.name}.${name}?`)) return;
            try { await api('DELETE', `/api/v1/devices/${encodeURIComponent(d.name)}/tags/${encodeURIComponent(name)}`); toast('Tag deleted.'); }
            catch (e) { toast(e.message); }
            reload();
          } }, 'Delete') : null));
    });
    let add = null;
    if (admin && !fromFile && DRIVERS[d.driver]) {
      const one = tagTable(d.driver, [{ ...DRIVERS[d.driver].first, name: '' }], 'tag-new');
      const addErr = h('p.error#tag-new-error', { role: 'alert', hidden: true });
      add = h('form#tag-add-form', { novalidate: true, onsubmit: async (e) => {
        e.preventDefault();
        one.clear(); addErr.hidden = true;
        try {
          await api('POST', `/api/v1/devices/${encodeURIComponent(d.name)}/tags`, one.read()[0]);
          toast('Tag added.');
          reload();
        } catch (x) {
          // The tag's own paths (`signal: ...`) are relative to it.
          const f = x.field;
          if (!f || !one.showError(0, f.split(/[.[]/)[0], x.message)) { addErr.textContent = x.message; addErr.hidden = false; }
        }
      } }, h('h3', { text: 'New tag' }), one.el, addErr, h('button#tag-add', { type: 'submit' }, 'Add tag'));
    }
    const browse = admin && !fromFile && d.driver === 'opcua'
      ? h('div', {}, h('h3', { text: 'Browse the server and import' }), browser(d, reload)) : null;
    detail.replaceChildren(h('section.panel', {}, h('h2', { text: `Tags of ${d.name}` }),
      h('div.table-wrap', {}, h('table#device-tags', {}, h('thead', {}, h('tr', {}, ['Tag', 'Access', 'Fields', ''].map((t) => h('th', { scope: 'col', text: t })))), h('tbody', {}, rows))),
      add, browse));
    async function reload() { try { showTags(await api('GET', '/api/v1/devices/' + encodeURIComponent(d.name))); } catch (e) { toast(e.message); } load(); }
  }

  await load();
  // A refresh must not pull a focused button out from under the keyboard.
  const timer = setInterval(() => { if (!main.contains(document.activeElement) || document.activeElement === main) load(); }, 5000);
  return () => clearInterval(timer);
}
