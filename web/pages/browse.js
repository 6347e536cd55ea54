// OPC UA browse-and-import: the server's address space as a tree that opens one level at
// a time (each level is one `GET .../browse?node=` to the device), a checkbox on every
// variable the gateway can read as a tag, and an Import button that posts the ticked
// nodes to `.../import` (the server names the tags and their types). Nothing is imported
// until the engineer presses it; what the server refuses (a tag that exists) is shown.
import { api, h, toast } from '../core.js';

/** The browser for device `d`; `imported()` runs after a successful import. */
export function browser(d, imported) {
  const base = `/api/v1/devices/${encodeURIComponent(d.name)}`;
  const picked = new Map(); // node_id → display name
  const status = h('p#browse-status.muted', { role: 'status', 'aria-live': 'polite' });
  const count = h('span#browse-picked', { text: 'none ticked' });
  const importBtn = h('button.primary#browse-import', { type: 'button', disabled: true, onclick: doImport }, 'Import ticked');
  const tree = h('ul.tree#browse-tree', { role: 'tree', 'aria-label': `Address space of ${d.name}` });
  const startBtn = h('button#browse-start', { type: 'button', onclick: () => { startBtn.hidden = true; level(null, tree); } }, 'Browse');

  function paintCount() {
    count.textContent = picked.size ? `${picked.size} ticked` : 'none ticked';
    importBtn.disabled = !picked.size;
  }

  /** Fills `ul` with the children of `node` (null: the Objects folder). */
  async function level(node, ul) {
    ul.replaceChildren(h('li.muted', { text: 'Asking the server…' }));
    let r;
    try {
      r = await api('GET', `${base}/browse` + (node ? '?node=' + encodeURIComponent(node) : ''));
    } catch (e) {
      ul.replaceChildren(h('li.error', { role: 'alert', text: `Browse failed (${e.status} ${e.code}): ${e.message}` }));
      return;
    }
    ul.replaceChildren(...r.children.map(item));
    if (!r.children.length) ul.append(h('li.muted', { text: 'No children.' }));
    if (r.truncated) ul.append(h('li.muted', { text: 'The server has more children than one browse returns; not all are shown.' }));
  }

  function item(c) {
    const sub = h('ul', { role: 'group', hidden: true });
    const li = h('li', { role: 'treeitem', 'data-node': c.node_id, 'aria-expanded': c.has_children ? 'false' : undefined });
    const toggle = c.has_children ? h('button.twisty', { type: 'button', 'aria-label': `Open ${c.display_name}`, onclick: async () => {
      const open = sub.hidden;
      sub.hidden = !open;
      li.setAttribute('aria-expanded', String(open));
      toggle.textContent = open ? '▾' : '▸';
      toggle.setAttribute('aria-label', `${open ? 'Close' : 'Open'} ${c.display_name}`);
      if (open && !sub.dataset.loaded) { sub.dataset.loaded = '1'; await level(c.node_id, sub); }
    } }, '▸') : h('span.twisty', { 'aria-hidden': 'true' });
    const what = c.node_class === 'Variable'
      ? ` ${c.data_type || '?'}${c.array ? '[]' : ''}, ${c.access_level?.write ? 'read/write' : 'read only'}` : ` ${c.node_class}`;
    const label = [h('span', { text: c.display_name }), h('small.muted', { text: what }), h('code.muted', { text: ' ' + c.node_id })];
    const pick = c.node_class === 'Variable' && c.importable
      ? h('label.check', {}, h('input', { type: 'checkbox', value: c.node_id, checked: picked.has(c.node_id), onchange: (e) => {
        if (e.target.checked) picked.set(c.node_id, c.display_name); else picked.delete(c.node_id);
        paintCount();
      } }), ...label)
      : h('span', {}, ...label, c.node_class === 'Variable' ? h('small.muted', { text: ' (not importable: no scalar type)' }) : null);
    li.append(toggle, ' ', pick, sub);
    return li;
  }

  async function doImport() {
    importBtn.disabled = true;
    status.className = 'muted'; status.textContent = `Importing ${picked.size}…`;
    try {
      const r = await api('POST', `${base}/import`, { nodes: [...picked.keys()].map((node_id) => ({ node_id })) });
      status.className = 'ok';
      status.textContent = `Imported ${r.tags.length}: ${r.tags.map((t) => `${t.name} (${t.data_type || 'any'})`).join(', ')}.`;
      toast(`Imported ${r.tags.length} tags into ${d.name}.`);
      picked.clear();
      paintCount();
      imported();
    } catch (e) {
      status.className = 'error';
      status.textContent = `Import refused (${e.status} ${e.code}): ${e.message}`;
      importBtn.disabled = false;
    }
  }

  return h('div.browser#browse', {}, h('div.toolbar', {}, startBtn, importBtn, count), status, tree);
}
