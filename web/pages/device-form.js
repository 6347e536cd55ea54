// The device form: the fields every device has, then the chosen driver's own fields as
// inputs (sim, Modbus TCP, Modbus RTU, OPC UA; rarely needed ones under "More settings"),
// the tags as a table with one input per tag field, and a JSON box for anything the form
// does not know (so a field added to a driver later can still be set). The API's
// `invalid_field` error names the field's path (`address`, `generate.count`,
// `tags[2].signal`); the message is shown at that input, which gets the focus.
import { h, ApiError } from '../core.js';

const SIGNALS = ['sine', 'ramp', 'random_walk', 'square', 'counter', 'constant'];
const MB_AREAS = ['holding_register', 'input_register', 'coil', 'discrete_input'];
const MB_TYPES = ['bool', 'i16', 'u16', 'i32', 'u32', 'i64', 'u64', 'f32', 'f64', 'string'];
const UA_TYPES = ['Boolean', 'SByte', 'Byte', 'Int16', 'UInt16', 'Int32', 'UInt32', 'Int64', 'UInt64', 'Float', 'Double',
  'String', 'DateTime', 'ByteString', 'Guid', 'LocalizedText'];
const num = (key, label, more, extra) => ({ key, label, type: 'number', more, ...extra });
const txt = (key, label, more, extra) => ({ key, label, type: 'text', more, ...extra });
const sel = (key, label, options, more, extra) => ({ key, label, type: 'select', options, more, ...extra });
const chk = (key, label, more) => ({ key, label, type: 'checkbox', more });

const MODBUS_COMMON = [
  num('unit_id', 'Unit id', false, { min: 0, max: 247, placeholder: '1' }),
  num('timeout_ms', 'Timeout (ms)', false, { min: 1, placeholder: '1000' }),
  num('max_gap', 'Largest gap joined (registers)', true, { min: 0, placeholder: '8' }),
  num('max_registers_per_read', 'Registers per read', true, { min: 1, max: 125, placeholder: '125' }),
  num('max_coils_per_read', 'Coils per read', true, { min: 1, max: 2000, placeholder: '2000' }),
  num('reconnect_min_ms', 'First retry delay (ms)', true, { min: 1, placeholder: '500' }),
  num('reconnect_max_ms', 'Longest retry delay (ms)', true, { min: 1, placeholder: '30000' }),
  chk('write_multiple_only', 'Write with FC 15/16 only', true),
];
const MODBUS_TAG = [
  sel('area', 'Area', MB_AREAS, false, { required: true }), num('address', 'Address', false, { min: 0, max: 65535, required: true }),
  sel('data_type', 'Type', MB_TYPES), num('length', 'Length'), num('bit', 'Bit', false, { min: 0, max: 15 }),
  sel('byte_order', 'Byte order', ['ABCD', 'BADC', 'CDAB', 'DCBA']), num('scale', 'Scale', false, { step: 'any' }),
  num('offset', 'Offset', false, { step: 'any' }), num('deadband', 'Deadband', false, { step: 'any', min: 0 }),
];

/** Per driver: its label, its device fields, its tag fields, and a first tag for a new device. */
export const DRIVERS = {
  sim: {
    label: 'Simulator',
    device: [
      num('generate.count', 'Generated tags', false, { min: 0, help: 'Read-only load tags named {prefix}{index}' }),
      sel('generate.signal', 'Their signal', SIGNALS), txt('generate.prefix', 'Their name prefix', false, { placeholder: 'g' }),
      num('seed', 'Random seed', true, { min: 0, placeholder: 'from the name' }),
    ],
    tag: [
      sel('signal', 'Signal', SIGNALS, false, { required: true }), num('amplitude', 'Amplitude', false, { step: 'any' }),
      num('offset', 'Offset', false, { step: 'any' }), num('period_ms', 'Period (ms)', false, { min: 1 }),
      num('step', 'Step', false, { step: 'any' }), num('min', 'Min', false, { step: 'any' }), num('max', 'Max', false, { step: 'any' }),
      num('duty', 'Duty', false, { step: 'any', min: 0, max: 1 }), sel('data_type', 'Type', ['f64', 'i64', 'u64', 'bool']),
    ],
    first: { name: 'level', signal: 'sine', amplitude: 10, offset: 50, period_ms: 60000 },
  },
  modbus_tcp: {
    label: 'Modbus TCP',
    device: [txt('address', 'Address (host:port)', false, { required: true, placeholder: '192.168.0.10:502' }), ...MODBUS_COMMON],
    tag: MODBUS_TAG,
    first: { name: 'pressure', area: 'holding_register', address: 100, data_type: 'f32' },
  },
  modbus_rtu: {
    label: 'Modbus RTU',
    device: [
      txt('port', 'Serial port', false, { required: true, placeholder: '/dev/ttyUSB0' }),
      num('baud_rate', 'Baud rate', false, { min: 1, placeholder: '9600' }), sel('parity', 'Parity', ['none', 'even', 'odd']),
      sel('stop_bits', 'Stop bits', ['1', '2'], false, { numeric: true }), num('data_bits', 'Data bits', true, { placeholder: '8' }),
      ...MODBUS_COMMON,
    ],
    tag: MODBUS_TAG,
    first: { name: 'pressure', area: 'holding_register', address: 100, data_type: 'u16' },
  },
  opcua: {
    label: 'OPC UA',
    device: [
      txt('endpoint', 'Endpoint URL', false, { required: true, placeholder: 'opc.tcp://plc:4840' }),
      sel('security_policy', 'Security policy', ['None', 'Basic256Sha256', 'Aes128_Sha256_RsaOaep', 'Aes256_Sha256_RsaPss']),
      sel('security_mode', 'Security mode', ['None', 'Sign', 'SignAndEncrypt']),
      txt('username', 'User (empty: anonymous)', false, { autocomplete: 'off' }),
      { key: 'password', label: 'Password', type: 'password', help: '*** keeps the stored one' },
      sel('mode', 'Mode', ['subscribe', 'poll']), num('publishing_interval_ms', 'Publishing interval (ms)', false, { min: 1, placeholder: '1000' }),
      num('sampling_interval_ms', 'Sampling interval (ms)', true, { min: 0 }), num('queue_size', 'Queue size', true, { min: 1 }),
      num('deadband', 'Deadband', true, { step: 'any', min: 0 }), num('keep_alive_count', 'Keep-alive count', true, { min: 1 }),
      num('timeout_ms', 'Timeout (ms)', true, { min: 1, placeholder: '5000' }),
      num('max_nodes_per_request', 'Nodes per request', true, { min: 1 }),
      txt('server_certificate_thumbprint', 'Server certificate SHA-1 thumbprint', true),
      txt('certificate', 'Client certificate file', true), txt('private_key', 'Client private key file', true),
      txt('user_certificate', 'User certificate file', true), txt('user_private_key', 'User private key file', true),
      num('reconnect_min_ms', 'First retry delay (ms)', true, { min: 1 }), num('reconnect_max_ms', 'Longest retry delay (ms)', true, { min: 1 }),
    ],
    tag: [txt('node_id', 'Node id', false, { required: true, placeholder: 'ns=2;s=Line1.Temp' }), sel('data_type', 'Type', UA_TYPES),
      num('deadband', 'Deadband', false, { step: 'any', min: 0 })],
    first: { name: 'temperature', node_id: 'ns=2;s=Line1.Temp', data_type: 'Double' },
  },
};

const COMMON = ['name', 'driver', 'enabled', 'poll_interval_ms', 'tags', 'source', 'status'];
const idOf = (key) => key.replace(/[^\w]/g, '-');
const getPath = (obj, key) => key.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
function setPath(obj, key, v) {
  const parts = key.split('.');
  let o = obj;
  for (const p of parts.slice(0, -1)) o = o[p] ??= {};
  o[parts.at(-1)] = v;
}
function delPath(obj, key) {
  const parts = key.split('.');
  const parent = parts.length > 1 ? getPath(obj, parts.slice(0, -1).join('.')) : obj;
  if (parent) delete parent[parts.at(-1)];
  if (parts.length > 1 && parent && !Object.keys(parent).length) delete obj[parts[0]];
}

/** One input for field `f` holding `value`; `read()` gives what to send (undefined: leave out). */
function input(f, value, id) {
  let el;
  if (f.type === 'select') {
    el = h('select', { id, name: f.key, required: f.required },
      f.required ? null : h('option', { value: '', text: '(default)' }),
      // A stored value the list does not know (a newer driver's) is kept, not dropped on save.
      ...[...f.options, ...(value != null && value !== '' && !f.options.includes(String(value)) ? [String(value)] : [])]
        .map((o) => h('option', { value: o, text: o, selected: String(value ?? '') === o })));
  } else if (f.type === 'checkbox') {
    el = h('input', { id, name: f.key, type: 'checkbox', checked: !!value });
  } else {
    el = h('input', { id, name: f.key, type: f.type === 'password' ? 'password' : f.type === 'number' ? 'number' : 'text',
      value: value == null ? '' : String(value), required: f.required, min: f.min, max: f.max, step: f.step,
      placeholder: f.placeholder, autocomplete: f.type === 'password' ? 'new-password' : f.autocomplete });
  }
  el.read = () => {
    if (f.type === 'checkbox') return el.checked || undefined;
    const raw = el.value.trim();
    if (raw === '') return undefined;
    // A number the browser cannot parse reaches the server as text, which names the field.
    return f.type === 'number' || f.numeric ? (Number.isFinite(Number(raw)) ? Number(raw) : raw) : raw;
  };
  return el;
}

/** A field with its label and the place its error is shown. */
function field(f, el, errId) {
  const err = h('span.field-error', { id: errId, role: 'alert' });
  el.setAttribute('aria-describedby', errId);
  const lbl = f.type === 'checkbox' ? h('label.check', {}, h('span', {}, el, ' ' + f.label), err)
    : h('label', {}, f.label, el, f.help ? h('small.muted', { text: f.help }) : null, err);
  return { lbl, err };
}

/**
 * The tag table of driver `drv`, holding `tags`. Returns the element, `read()` (the tags to
 * send, unknown fields of a tag kept), `add(tag)`, and `showError(index, key, msg)`.
 */
export function tagTable(drv, tags, idPrefix) {
  const spec = [txt('name', 'Name', false, { required: true }), ...DRIVERS[drv].tag, chk('writable', 'Writable')];
  const body = h('tbody');
  const rows = [];
  function add(tag) {
    const known = new Set(spec.map((f) => f.key));
    const rest = Object.fromEntries(Object.entries(tag).filter(([k]) => !known.has(k)));
    const row = { inputs: {}, errs: {}, rest };
    const i = rows.length;
    const cells = spec.map((f) => {
      const el = input(f, tag[f.key], `${idPrefix}-${i}-${f.key}`);
      el.setAttribute('aria-label', `${f.label} of tag ${i + 1}`);
      const err = h('span.field-error', { id: `err-${idPrefix}-${i}-${f.key}`, role: 'alert' });
      el.setAttribute('aria-describedby', err.id);
      row.inputs[f.key] = el; row.errs[f.key] = err;
      return h('td', {}, el, err);
    });
    row.tr = h('tr', { 'data-row': i }, ...cells, h('td', {}, h('button.danger', { type: 'button', 'aria-label': `Remove tag ${i + 1}`,
      onclick: () => { row.removed = true; row.tr.hidden = true; } }, 'Remove')));
    rows.push(row);
    body.append(row.tr);
  }
  for (const t of tags) add(t);
  const el = h('div.table-wrap', {}, h('table.tag-editor', { id: idPrefix },
    h('thead', {}, h('tr', {}, ...spec.map((f) => h('th', { scope: 'col', text: f.label })), h('th', {}, h('span.sr', { text: 'Actions' })))),
    body));
  const live = () => rows.filter((r) => !r.removed);
  return {
    el, add,
    read: () => live().map((r) => {
      const t = { ...r.rest };
      for (const [k, inp] of Object.entries(r.inputs)) { const v = inp.read(); if (v !== undefined) t[k] = v; }
      return t;
    }),
    clear() { for (const r of rows) { for (const k in r.errs) { r.errs[k].textContent = ''; r.inputs[k].removeAttribute('aria-invalid'); } } },
    /** Shows `msg` at the tag of index `i` (among the tags sent) and its field `key` (else its name). */
    showError(i, key, msg) {
      const r = live()[i];
      if (!r) return false;
      const k = key in r.inputs ? key : 'name';
      r.errs[k].textContent = msg;
      r.inputs[k].setAttribute('aria-invalid', 'true');
      r.inputs[k].focus();
      return true;
    },
  };
}

/**
 * The create/edit form. `d`: the device as the API lists it (null: a new one). `save(payload)`
 * sends it and throws the API's error; `done()` runs after a save, `cancel()` on Cancel.
 */
export function deviceForm(d, { save, done, cancel }) {
  const editing = !!d;
  const common = {
    name: h('input#dev-name', { name: 'name', required: true, value: d?.name || '', readOnly: editing, pattern: '[A-Za-z0-9_\\-]+', autocomplete: 'off' }),
    driver: h('select#dev-driver', { name: 'driver', disabled: editing },
      ...Object.entries(DRIVERS).map(([k, v]) => h('option', { value: k, text: `${v.label} (${k})`, selected: k === (d?.driver || 'sim') }))),
    poll_interval_ms: h('input#dev-poll', { name: 'poll_interval_ms', type: 'number', min: 1, value: String(d?.poll_interval_ms ?? 1000) }),
    enabled: h('input#dev-enabled', { name: 'enabled', type: 'checkbox', checked: d ? d.enabled : true }),
  };
  const errs = {};
  const wrap = (key, label, el) => {
    errs[key] = h('span.field-error', { id: 'err-' + key, role: 'alert' });
    el.setAttribute('aria-describedby', 'err-' + key);
    return h('label', {}, label, el, errs[key]);
  };
  const driverBox = h('fieldset#dev-driver-fields');
  const tagsBox = h('div#dev-tags-box');
  const extra = h('textarea#dev-extra', { name: 'extra', rows: 3, spellcheck: false });
  let inputs = {};
  let tags;

  function build(drv, values) {
    const spec = DRIVERS[drv];
    inputs = {};
    const main = [], more = [];
    for (const f of spec.device) {
      const id = 'dev-f-' + idOf(f.key);
      const el = input(f, getPath(values, f.key), id);
      const { lbl, err } = field(f, el, 'err-f-' + idOf(f.key));
      inputs[f.key] = { el, err };
      (f.more ? more : main).push(lbl);
    }
    driverBox.replaceChildren(h('legend', { text: `${spec.label} settings` }), h('div.fields', {}, ...main),
      more.length ? h('details', {}, h('summary', { text: 'More settings' }), h('div.fields', {}, ...more)) : null);
    // What the form has no input for stays editable as JSON.
    const rest = {};
    for (const [k, v] of Object.entries(values)) if (!COMMON.includes(k)) rest[k] = v;
    for (const f of spec.device) delPath(rest, f.key);
    extra.value = JSON.stringify(rest, null, 1);
    tags = tagTable(drv, values.tags || [], 'dev-tags');
    tagsBox.replaceChildren(h('h3', { text: 'Tags' }), tags.el,
      h('button#dev-tag-add', { type: 'button', onclick: () => tags.add({ name: '' }) }, 'Add tag'));
  }
  build(d?.driver || 'sim', d ? structuredClone(d) : { tags: [DRIVERS.sim.first] });
  common.driver.addEventListener('change', () => build(common.driver.value, { tags: [DRIVERS[common.driver.value].first] }));

  const formErr = h('p.error#dev-form-error', { hidden: true, role: 'alert' });
  const form = h('form#device-form', { onsubmit: submit, novalidate: true },
    h('div.fields', {}, wrap('name', 'Name', common.name), wrap('driver', 'Driver', common.driver),
      wrap('poll_interval_ms', 'Poll interval (ms)', common.poll_interval_ms),
      h('label.check', {}, h('span', {}, common.enabled, ' Enabled'))),
    driverBox, tagsBox,
    h('details#dev-extra-box', {}, h('summary', { text: 'Other fields (JSON)' }),
      wrap('extra', 'Driver fields the form has no input for, as a JSON object', extra)),
    formErr,
    h('div.toolbar', {}, h('button.primary#dev-save', { type: 'submit' }, editing ? 'Save' : 'Create'),
      h('button#dev-cancel', { type: 'button', onclick: cancel }, 'Cancel')));

  function clear() {
    for (const k in errs) errs[k].textContent = '';
    for (const x of Object.values(inputs)) { x.err.textContent = ''; x.el.removeAttribute('aria-invalid'); }
    for (const x of Object.values(common)) x.removeAttribute('aria-invalid');
    extra.removeAttribute('aria-invalid');
    tags.clear();
    formErr.hidden = true;
  }

  /** Puts `msg` at the input `path` names; false if the form has none. */
  function showAt(path, msg) {
    const at = (el, err) => { err.textContent = msg; el.setAttribute('aria-invalid', 'true'); el.focus(); if (el.closest('details')) el.closest('details').open = true; return true; };
    if (path in common) return at(common[path], errs[path]);
    if (path in inputs) return at(inputs[path].el, inputs[path].err);
    const m = /^tags\[(\d+)\](?:\.(\w+))?/.exec(path);
    if (m) return tags.showError(Number(m[1]), m[2] || 'name', msg);
    // A field under one the form has (`generate.count` when `generate` is wrong as a whole).
    const parent = Object.keys(inputs).find((k) => k.startsWith(path + '.') || path.startsWith(k + '.'));
    if (parent) return at(inputs[parent].el, inputs[parent].err);
    let rest = {};
    try { rest = JSON.parse(extra.value || '{}'); } catch { /* handled on submit */ }
    if (path.split(/[.[]/)[0] in rest) return at(extra, errs.extra);
    return false;
  }

  async function submit(e) {
    e.preventDefault();
    clear();
    let rest;
    try { rest = JSON.parse(extra.value || '{}'); } catch (x) { return showAt('extra', 'Not JSON: ' + x.message); }
    const payload = { ...rest, name: common.name.value.trim(), driver: common.driver.value, enabled: common.enabled.checked,
      poll_interval_ms: Number(common.poll_interval_ms.value) };
    for (const [k, x] of Object.entries(inputs)) { const v = x.el.read(); if (v !== undefined) setPath(payload, k, v); }
    payload.tags = tags.read();
    try {
      await save(payload);
      done(payload);
    } catch (x) {
      const f = x instanceof ApiError ? x.field : null;
      if (!f || !showAt(f, x.message)) { formErr.textContent = x.message; formErr.hidden = false; }
    }
  }

  return { form, focus: () => (editing ? common.poll_interval_ms : common.name).focus() };
}
