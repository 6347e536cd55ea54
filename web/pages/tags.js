// Tags: live values for a pattern, a trend per tag, set-points. Built for 10,000 tags: the
// list is virtualised (only the rows in view exist in the DOM) and updates only touch a
// Map; the visible rows are repainted at most once per animation frame. The trend shows the
// last 15 min / 1 h / 24 h or a custom from..to; zooming (the buttons, or dragging across the
// chart) asks the history API again for the narrower range, so detail is never an upscale.
import { api, h, live, session, fmtValue, stateBadge } from '../core.js';

const ROW = 32; // px; must match .vlist .row height in app.css
const RANGES = { '15 min': 15 * 60e3, '1 h': 3600e3, '24 h': 86400e3 };
const MIN_SPAN = 10e3; // ms: below this a bucket is shorter than most poll intervals
const BUCKETS = 240; // about one per 3 px of a 720 px chart

/** A bucket length the history API takes (whole seconds) giving about BUCKETS points over `span` ms. */
function intervalFor(span) { return Math.max(1, Math.ceil(span / BUCKETS / 1000)) + 's'; }

/** `ms` as a datetime-local input's value (local time, minutes). */
function localInput(ms) { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3); return d.toISOString().slice(0, 16); }

function qualityBadge(q) {
  return stateBadge(q || '—', q === 'good' ? 'good' : q === 'bad' ? 'bad' : 'uncertain');
}

export async function render(main) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const values = new Map(); // tag → {value, quality, ts, reason}
  let order = []; // sorted tag names matching the pattern
  let writable = new Set();
  let selected = null;
  let dirty = false;

  const pattern = h('input#tag-pattern', { value: params.get('pattern') || '*', 'aria-describedby': 'tag-pattern-help' });
  const count = h('span#tag-count.muted', { role: 'status' });
  const scroller = h('div.vlist#tag-list', { tabindex: 0, role: 'grid', 'aria-label': 'Live values', 'aria-rowcount': 0 });
  const spacer = h('div');
  const head = h('div.row.head', { role: 'row' }, ...['Tag', 'Value', 'Quality', 'Time', 'Reason'].map((t, i) => h('span' + (i > 2 ? '.wide' : ''), { role: 'columnheader', text: t })));
  scroller.append(head, spacer);
  const detail = h('section.panel#tag-detail', { hidden: true });

  main.replaceChildren(h('h1', { text: 'Tags' }),
    h('form.toolbar', { onsubmit: (e) => { e.preventDefault(); apply(); } },
      h('label', {}, 'Pattern', pattern), h('button', { type: 'submit' }, 'Filter'), count),
    h('p.muted#tag-pattern-help', { text: '* matches any run of characters, ? one; e.g. line1.*. Arrow keys move, Enter opens a tag.' }),
    scroller, detail);

  // Rows are recycled: a pool sized to the viewport, positioned absolutely over the spacer.
  const pool = [];
  function paint() {
    dirty = false;
    spacer.style.height = order.length * ROW + 'px'; // the sticky head row above it is in the flow too
    // As tall as its rows up to 60 % of the window, so the trend below stays in view.
    scroller.style.height = Math.max(ROW * 4, Math.min(innerHeight * 0.6, (order.length + 1) * ROW + 2)) + 'px';
    const first = Math.max(0, Math.floor(scroller.scrollTop / ROW) - 1);
    const n = Math.min(order.length - first, Math.ceil(scroller.clientHeight / ROW) + 3);
    while (pool.length < n) {
      const r = h('div.row', { role: 'row' }, h('span', { role: 'rowheader' }), h('span.num'), h('span'), h('span.wide'), h('span.wide.muted'));
      r.addEventListener('click', () => select(r.dataset.tag));
      pool.push(r);
      scroller.append(r);
    }
    pool.forEach((r, i) => {
      if (i >= n) { r.hidden = true; return; }
      const tag = order[first + i];
      const v = values.get(tag) || {};
      r.hidden = false;
      r.style.top = (first + i + 1) * ROW + 'px';
      r.dataset.tag = tag;
      r.setAttribute('aria-rowindex', first + i + 1);
      r.classList.toggle('sel', tag === selected);
      const c = r.children;
      c[0].textContent = tag + (writable.has(tag) ? ' ✎' : '');
      c[1].textContent = fmtValue(v.value);
      c[2].replaceChildren(qualityBadge(v.quality));
      c[3].textContent = v.ts ? new Date(v.ts).toLocaleTimeString() : '';
      c[4].textContent = v.reason || '';
    });
    count.textContent = `${order.length} tags`;
    scroller.setAttribute('aria-rowcount', order.length);
  }
  const schedule = () => { if (!dirty) { dirty = true; requestAnimationFrame(paint); } };
  scroller.addEventListener('scroll', schedule, { passive: true });
  window.addEventListener('resize', schedule);
  scroller.addEventListener('keydown', (e) => {
    const i = Math.max(0, order.indexOf(selected));
    const to = { ArrowDown: i + 1, ArrowUp: i - 1, PageDown: i + 10, PageUp: i - 10, Home: 0, End: order.length - 1 }[e.key];
    if (to !== undefined && order.length) {
      e.preventDefault();
      selected = order[Math.max(0, Math.min(order.length - 1, to))];
      const idx = order.indexOf(selected);
      if ((idx + 1) * ROW < scroller.scrollTop + ROW) scroller.scrollTop = idx * ROW;
      if ((idx + 2) * ROW > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = (idx + 2) * ROW - scroller.clientHeight;
      schedule();
    } else if (e.key === 'Enter' && selected) { e.preventDefault(); select(selected); }
  });

  function merge(list) {
    let added = false;
    for (const v of list) {
      if (!values.has(v.tag)) added = true;
      values.set(v.tag, v);
    }
    if (added) order = [...values.keys()].sort();
    schedule();
    if (selected && detail.update) { const v = values.get(selected); if (v) detail.update(v); }
  }

  async function apply() {
    const p = pattern.value.trim() || '*';
    history.replaceState(null, '', '#/tags?pattern=' + encodeURIComponent(p));
    values.clear(); order = [];
    try {
      const r = await api('GET', '/api/v1/values?pattern=' + encodeURIComponent(p));
      merge(r.values);
    } catch (e) { count.textContent = 'Could not load values: ' + e.message; }
    live.watch([p]);
    schedule();
  }

  const off = live.on((m) => { if (m.type === 'update') merge(m.values); });

  function select(tag) {
    if (!tag) return;
    selected = tag;
    schedule();
    openDetail(tag);
  }

  // The trend's range: a preset that follows now, or fixed `from`..`to` (ms since the epoch).
  let view = { preset: '15 min' };
  const span = () => (view.preset ? [Date.now() - RANGES[view.preset], Date.now()] : [view.from, view.to]);
  function openDetail(tag) {
    const canWrite = session.can('operator');
    const isWritable = writable.has(tag);
    const valueEl = h('strong#detail-value');
    const qEl = h('span#detail-quality');
    const canvas = h('canvas.trend#trend', { role: 'img', 'aria-label': `Trend of ${tag}` });
    const band = h('div.trend-select', { hidden: true });
    const chartNote = h('p.muted#trend-note', { role: 'status' });
    const ackEl = h('div#setpoint-result', { role: 'status', 'aria-live': 'polite' });
    const input = h('input#setpoint-value', { 'aria-label': 'New value', disabled: !canWrite || !isWritable, size: 10 });
    const btn = h('button.primary#setpoint-write', { type: 'submit', disabled: !canWrite || !isWritable }, 'Write');
    const note = !isWritable ? 'This tag is read only.' : !canWrite ? 'Writing set-points needs the operator role.' : '';
    const redraw = () => drawTrend(tag, canvas, chartNote);
    const setView = (v) => { view = v; paintRange(); redraw(); };
    const rangeBtns = Object.keys(RANGES).map((k) => h('button', { type: 'button', 'data-range': k, onclick: () => setView({ preset: k }) }, k));
    const fromIn = h('input#trend-from', { type: 'datetime-local', required: true });
    const toIn = h('input#trend-to', { type: 'datetime-local', required: true });
    const rangeErr = h('span.field-error#trend-range-error', { role: 'alert' });
    function paintRange() {
      for (const b of rangeBtns) b.setAttribute('aria-pressed', String(b.dataset.range === view.preset));
      const [f, t] = span();
      fromIn.value = localInput(f); toIn.value = localInput(t);
    }
    /** Zooms by `factor` (< 1: in); a view that ends now keeps ending now, others keep their centre. */
    function zoom(factor) {
      const [f, t] = span();
      const w = Math.max(MIN_SPAN, (t - f) * factor);
      const live = !!view.preset || Date.now() - t < 1000;
      setView(live ? { from: t - w, to: t } : { from: (f + t) / 2 - w / 2, to: (f + t) / 2 + w / 2 });
    }
    function pan(dir) { const [f, t] = span(); const d = (t - f) / 2 * dir; setView({ from: f + d, to: t + d }); }
    const custom = h('form.toolbar#trend-custom', { novalidate: true, onsubmit: (e) => {
      e.preventDefault();
      rangeErr.textContent = '';
      const f = Date.parse(fromIn.value), t = Date.parse(toIn.value);
      if (!Number.isFinite(f) || !Number.isFinite(t)) { rangeErr.textContent = 'Give both times.'; return; }
      if (t - f < MIN_SPAN) { rangeErr.textContent = 'From must be before to (at least 10 s).'; return; }
      setView({ from: f, to: t });
    } }, h('label', {}, 'From', fromIn), h('label', {}, 'To', toIn), h('button', { type: 'submit' }, 'Show'), rangeErr);
    // Drag across the chart to zoom to that stretch; the buttons do the same by keyboard.
    let drag = null;
    canvas.addEventListener('pointerdown', (e) => { drag = { x0: e.offsetX }; canvas.setPointerCapture(e.pointerId); });
    canvas.addEventListener('pointermove', (e) => {
      if (!drag) return;
      const [l, r] = [Math.min(drag.x0, e.offsetX), Math.max(drag.x0, e.offsetX)];
      Object.assign(band.style, { left: l + 'px', width: r - l + 'px' });
      band.hidden = false;
    });
    canvas.addEventListener('pointerup', (e) => {
      if (!drag || !canvas.toTime) { drag = null; return; }
      const [l, r] = [Math.min(drag.x0, e.offsetX), Math.max(drag.x0, e.offsetX)];
      drag = null; band.hidden = true;
      if (r - l < 5) return; // a click, not a drag
      const f = canvas.toTime(l), t = canvas.toTime(r);
      setView(t - f < MIN_SPAN ? { from: (f + t) / 2 - MIN_SPAN / 2, to: (f + t) / 2 + MIN_SPAN / 2 } : { from: f, to: t });
    });
    detail.replaceChildren(
      h('h2', {}, tag),
      h('p', {}, 'Value ', valueEl, ' · quality ', qEl),
      h('div.toolbar', { role: 'group', 'aria-label': 'Trend range' }, ...rangeBtns,
        h('button#trend-zoom-in', { type: 'button', 'aria-label': 'Zoom in', onclick: () => zoom(0.5) }, '+'),
        h('button#trend-zoom-out', { type: 'button', 'aria-label': 'Zoom out', onclick: () => zoom(2) }, '−'),
        h('button#trend-earlier', { type: 'button', 'aria-label': 'Earlier', onclick: () => pan(-1) }, '←'),
        h('button#trend-later', { type: 'button', 'aria-label': 'Later', onclick: () => pan(1) }, '→')),
      custom,
      h('div.trend-wrap', {}, canvas, band), chartNote,
      h('h2', { text: 'Set-point' }),
      h('form.toolbar#setpoint-form', { onsubmit: async (e) => {
        e.preventDefault();
        const raw = input.value.trim();
        let value;
        try { value = JSON.parse(raw); } catch { value = raw; }
        ackEl.className = ''; ackEl.textContent = 'Writing…';
        btn.disabled = true;
        const t0 = performance.now();
        try {
          const ack = await api('POST', '/api/v1/commands', { tag, value, timeout_ms: 5000 });
          ackEl.className = 'ok';
          ackEl.textContent = `Acknowledged by the device: ${tag} = ${fmtValue(value)} (${ack.status || 'ok'}, ${Math.round(performance.now() - t0)} ms)`;
        } catch (x) {
          ackEl.className = 'error';
          ackEl.textContent = `Refused (${x.status} ${x.code}): ${x.message}`;
        }
        btn.disabled = false;
      } }, h('label', {}, 'New value', input), btn, note ? h('span.muted#setpoint-note', { text: note }) : null),
      ackEl);
    detail.hidden = false;
    detail.update = (v) => { valueEl.textContent = fmtValue(v.value); qEl.replaceChildren(qualityBadge(v.quality)); };
    const v = values.get(tag);
    if (v) detail.update(v);
    paintRange();
    redraw();
  }

  let drawing = 0;
  async function drawTrend(tag, canvas, note) {
    const [t0, t1] = span();
    const interval = intervalFor(t1 - t0);
    const what = view.preset ? `the last ${view.preset}` : `${new Date(t0).toLocaleString()} – ${new Date(t1).toLocaleString()}`;
    const mine = ++drawing; // a slow answer for an older range must not paint over a newer one
    note.textContent = 'Loading history…';
    let rows = [];
    try {
      const q = `tags=${encodeURIComponent(tag)}&from=${new Date(t0).toISOString()}&to=${new Date(t1).toISOString()}&interval=${interval}&agg=avg,min,max`;
      const r = await api('GET', '/api/v1/history?' + q);
      rows = (r.series[0]?.rows || []).filter((x) => x[1] !== null);
    } catch (e) { if (mine === drawing) note.textContent = e.code === 'history_disabled' ? 'History is off in this gateway.' : 'No history: ' + e.message; return; }
    if (mine !== drawing) return;
    Object.assign(canvas.dataset, { from: String(Math.round(t0)), to: String(Math.round(t1)), interval });
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, hgt = canvas.clientHeight;
    canvas.width = w * dpr; canvas.height = hgt * dpr;
    const g = canvas.getContext('2d');
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, hgt);
    canvas.toTime = null;
    canvas.dataset.points = '0';
    if (!rows.length) { note.textContent = `No stored readings in ${what}.`; return; }
    const t = rows.map((x) => Date.parse(x[0]));
    const lo = Math.min(...rows.map((x) => x[2])), hi = Math.max(...rows.map((x) => x[3]));
    const pad = { l: 56, r: 8, t: 8, b: 22 };
    const X = (ts) => pad.l + ((ts - t0) / (t1 - t0)) * (w - pad.l - pad.r);
    canvas.toTime = (x) => t0 + ((Math.min(Math.max(x, pad.l), w - pad.r) - pad.l) / (w - pad.l - pad.r)) * (t1 - t0);
    const range = hi - lo || 1;
    const Y = (v) => pad.t + (1 - (v - lo) / range) * (hgt - pad.t - pad.b);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#5b6570'; g.strokeStyle = '#e1e4e8';
    for (let i = 0; i <= 4; i++) {
      const v = lo + (range * i) / 4, y = Y(v);
      g.beginPath(); g.moveTo(pad.l, y); g.lineTo(w - pad.r, y); g.stroke();
      g.fillText(fmtValue(+v.toPrecision(4)), 4, y + 4);
    }
    for (let i = 0; i <= 4; i++) {
      const ts = t0 + ((t1 - t0) * i) / 4;
      const label = t1 - t0 > 2 * 86400e3 ? new Date(ts).toLocaleDateString([], { month: 'short', day: 'numeric' })
        : new Date(ts).toLocaleTimeString([], t1 - t0 < 600e3 ? { hour: '2-digit', minute: '2-digit', second: '2-digit' } : { hour: '2-digit', minute: '2-digit' });
      g.fillText(label, Math.min(X(ts) - 14, w - 60), hgt - 6);
    }
    // The min..max band first, the average over it: a spike stays visible at any range.
    g.fillStyle = 'rgba(36,84,143,.15)';
    g.beginPath();
    rows.forEach((x, i) => (i ? g.lineTo(X(t[i]), Y(x[3])) : g.moveTo(X(t[i]), Y(x[3]))));
    for (let i = rows.length - 1; i >= 0; i--) g.lineTo(X(t[i]), Y(rows[i][2]));
    g.fill();
    g.strokeStyle = '#24548f'; g.lineWidth = 1.5;
    g.beginPath();
    rows.forEach((x, i) => (i ? g.lineTo(X(t[i]), Y(x[1])) : g.moveTo(X(t[i]), Y(x[1]))));
    g.stroke();
    note.textContent = `${rows.length} points of ${interval} (average, band min..max) over ${what}; min ${fmtValue(lo)}, max ${fmtValue(hi)}. Drag across the chart to zoom.`;
    canvas.dataset.points = String(rows.length);
  }

  try {
    const { devices } = await api('GET', '/api/v1/devices');
    writable = new Set(devices.flatMap((d) => (d.tags || []).filter((t) => t.writable).map((t) => d.name + '.' + t.name)));
  } catch { /* without the list no tag is offered for writing; the server decides anyway */ }
  await apply();
  if (params.get('tag')) select(params.get('tag'));
  return () => { off(); live.watch([]); window.removeEventListener('resize', schedule); };
}
