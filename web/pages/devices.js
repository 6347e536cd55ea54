// Devices: the list with each driver's state, a form to create or edit a device (every
// driver: the common fields as inputs, the driver's own fields and the tags as JSON, since
// they differ per driver), enable/disable, delete, and each device's tags. The API's
// `invalid_field` message starts with the field's path; the error is shown at that field.
import { api, h, session, toast, stateBadge, ApiError } from '../core.js';

const TEMPLATES = {
  sim: { extra: {}, tags: [{ name: 'level', signal: 'sine', amplitude: 10, offset: 50, period_ms: 60000 }, { name: 'setpoint', signal: 'constant', offset: 0, writable: true }] },
  modbus_tcp: { extra: { address: '192.168.0.10:502' }, tags: [{ name: 'pressure', area: 'holding_register', address: 100, data_type: 'f32' }] },
  modbus_rtu: { extra: { port: '/dev/ttyUSB0', baud_rate: 9600 }, tags: [{ name: 'pressure', area: 'holding_register', address: 100, data_type: 'u16' }] },
  opcua: { extra: { endpoint: 'opc.tcp://plc:4840', security_policy: 'None' }, tags: [{ name: 'temperature', node_id: 'ns=2;s=Line1.Temp', data_type: 'Double' }] },
};
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
      h('thead', {}, h('tr', {}, ['Name', 'Driver', 'State', 'Tags', 'Source', 'Poll (ms)', ''].map((t) => h('th', { scope: 'col', text: t })))),
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
          h('td', { text: String((d.tags || []).length) }), h('td', { text: d.source }), h('td', { text: String(d.poll_interval_ms ?? '') }),
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
    const tpl = TEMPLATES[d?.driver || 'sim'];
    const fields = {
      name: h('input#dev-name', { name: 'name', required: true, value: d?.name || '', readOnly: editing, pattern: '[A-Za-z0-9_\\-]+' }),
      driver: h('select#dev-driver', { name: 'driver', disabled: editing }, ...Object.keys(TEMPLATES).map((k) => h('option', { value: k, text: k, selected: k === (d?.driver || 'sim') }))),
      poll_interval_ms: h('input#dev-poll', { name: 'poll_interval_ms', type: 'number', min: 1, value: String(d?.poll_interval_ms ?? 1000) }),
      enabled: h('input#dev-enabled', { name: 'enabled', type: 'checkbox', checked: d ? d.enabled : true }),
      extra: h('textarea#dev-extra', { name: 'extra', rows: 4, spellcheck: false }),
      tags: h('textarea#dev-tags', { name: 'tags', rows: 8, spellcheck: false }),
    };
    const extra = {};
    if (d) for (const [k, v] of Object.entries(d)) if (!COMMON.includes(k)) extra[k] = v;
    fields.extra.value = JSON.stringify(d ? extra : tpl.extra, null, 1);
    fields.tags.value = JSON.stringify(d ? d.tags : tpl.tags, null, 1);
    fields.driver.addEventListener('change', () => {
      const t = TEMPLATES[fields.driver.value];
      fields.extra.value = JSON.stringify(t.extra, null, 1);
      fields.tags.value = JSON.stringify(t.tags, null, 1);
    });
    const errs = {};
    const wrap = (key, label, input) => {
      errs[key] = h('span.field-error', { id: 'err-' + key, role: 'alert' });
      input.setAttribute('aria-describedby', 'err-' + key);
      return h('label', {}, label, input, errs[key]);
    };
    const formErr = h('p.error', { hidden: true, role: 'alert' });
    const form = h('form.fields#device-form', { onsubmit: submit },
      wrap('name', 'Name', fields.name), wrap('driver', 'Driver', fields.driver),
      wrap('poll_interval_ms', 'Poll interval (ms)', fields.poll_interval_ms),
      h('label', {}, h('span', {}, fields.enabled, ' Enabled')),
      wrap('extra', "Driver's fields (JSON object)", fields.extra),
      wrap('tags', 'Tags (JSON array)', fields.tags),
      h('div', {}, formErr, h('button.primary#dev-save', { type: 'submit' }, editing ? 'Save' : 'Create'), ' ',
        h('button', { type: 'button', onclick: () => { formBox.hidden = true; } }, 'Cancel')));
    formBox.replaceChildren(h('h2', { text: editing ? `Edit ${d.name}` : 'New device' }), form);
    formBox.hidden = false;
    (editing ? fields.poll_interval_ms : fields.name).focus();

    async function submit(e) {
      e.preventDefault();
      for (const k in errs) errs[k].textContent = '';
      for (const f of Object.values(fields)) f.removeAttribute('aria-invalid');
      formErr.hidden = true;
      const fail = (key, msg) => { errs[key].textContent = msg; fields[key].setAttribute('aria-invalid', 'true'); fields[key].focus(); };
      let extraObj, tagsArr;
      try { extraObj = JSON.parse(fields.extra.value || '{}'); } catch (x) { return fail('extra', 'Not JSON: ' + x.message); }
      try { tagsArr = JSON.parse(fields.tags.value || '[]'); } catch (x) { return fail('tags', 'Not JSON: ' + x.message); }
      const payload = { ...extraObj, name: fields.name.value, driver: fields.driver.value, enabled: fields.enabled.checked,
        poll_interval_ms: Number(fields.poll_interval_ms.value), tags: tagsArr };
      try {
        if (editing) await api('PUT', '/api/v1/devices/' + encodeURIComponent(d.name), payload);
        else await api('POST', '/api/v1/devices', payload);
        toast(`Device ${payload.name} ${editing ? 'saved' : 'created'}.`);
        formBox.hidden = true;
        load();
      } catch (x) {
        const f = x instanceof ApiError ? x.field : null;
        const key = !f ? null : f in fields && f !== 'extra' ? f : f.startsWith('tags') ? 'tags' : 'extra';
        if (key) fail(key, x.message); else { formErr.textContent = x.message; formErr.hidden = false; }
      }
    }
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
    const addErr = h('span.field-error', { role: 'alert' });
    const tagJson = h('textarea#tag-new', { rows: 3, 'aria-label': 'New tag as JSON', spellcheck: false });
    tagJson.value = JSON.stringify(TEMPLATES[d.driver]?.tags[0] || { name: 'new' });
    const add = admin && !fromFile ? h('form.toolbar', { onsubmit: async (e) => {
      e.preventDefault();
      addErr.textContent = '';
      try {
        await api('POST', `/api/v1/devices/${encodeURIComponent(d.name)}/tags`, JSON.parse(tagJson.value));
        toast('Tag added.');
        reload();
      } catch (x) { addErr.textContent = x.message; }
    } }, h('label', {}, 'New tag (JSON)', tagJson), h('button', { type: 'submit' }, 'Add tag'), addErr) : null;
    detail.replaceChildren(h('section.panel', {}, h('h2', { text: `Tags of ${d.name}` }),
      h('div.table-wrap', {}, h('table#device-tags', {}, h('thead', {}, h('tr', {}, ['Tag', 'Access', 'Fields', ''].map((t) => h('th', { scope: 'col', text: t })))), h('tbody', {}, rows))),
      add));
    async function reload() { try { showTags(await api('GET', '/api/v1/devices/' + encodeURIComponent(d.name))); } catch (e) { toast(e.message); } load(); }
  }

  await load();
  // A refresh must not pull a focused button out from under the keyboard.
  const timer = setInterval(() => { if (!main.contains(document.activeElement) || document.activeElement === main) load(); }, 5000);
  return () => clearInterval(timer);
}
