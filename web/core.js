// What every page shares: the session (token in sessionStorage, so it dies with the tab),
// the REST helper that turns the API's {"error":{code,message}} into an ApiError, one
// WebSocket for the whole app, and a tiny element builder (no framework, no build step).

const KEY = 'egw.session';
const RANK = { viewer: 1, operator: 2, admin: 3 };

export const session = {
  get() { try { return JSON.parse(sessionStorage.getItem(KEY)); } catch { return null; } },
  set(s) { sessionStorage.setItem(KEY, JSON.stringify(s)); },
  clear() { sessionStorage.removeItem(KEY); },
  /** Whether the signed-in role is at least `role` (the server checks again). */
  can(role) { const s = this.get(); return !!s && (RANK[s.role] || 0) >= RANK[role]; },
};

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  /** The field an `invalid_field` message names (`tags[0].name: ...`), if any. */
  get field() { const m = /^([\w.\[\]]+): /.exec(this.message); return m ? m[1] : null; }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const s = session.get();
  if (s) headers.Authorization = 'Bearer ' + s.token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    if (r.status === 401 && s) { session.clear(); location.hash = '#/login'; }
    const e = (data && data.error) || {};
    throw new ApiError(r.status, e.code || 'http_' + r.status, e.message || r.statusText);
  }
  return data;
}

/** h('tag.class#id', {attrs}, ...children): enough DOM building for these pages. */
export function h(sel, attrs, ...kids) {
  const [, tag, rest] = /^([\w-]+)(.*)$/.exec(sel);
  const el = document.createElement(tag);
  for (const part of rest.match(/[.#][\w-]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) el.append(k);
  return el;
}

export function toast(msg) {
  const t = document.getElementById('toast');
  t.textContent = msg;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, 5000);
}

export function fmtValue(v) {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(+v.toFixed(4));
  if (v === null || v === undefined) return '—';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export function fmtBytes(n) {
  if (n == null) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}

export function fmtAge(s) {
  if (s == null) return '—';
  const d = Math.floor(s / 86400), hh = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return d ? `${d} d ${hh} h` : hh ? `${hh} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

export function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : '—'; }

/** A state word with its colour class; the word carries the meaning, the colour only helps. */
export function stateBadge(word, cls) { return h('span.state.' + cls, { text: word }); }

/** The one WebSocket: pages add listeners and patterns; it reconnects with backoff. */
export const live = {
  ws: null, listeners: new Set(), patterns: [], alarms: false, delay: 500, status: 'offline',
  on(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); },
  setStatus(s) {
    this.status = s;
    const el = document.getElementById('link');
    if (el) { el.textContent = s === 'online' ? 'live' : s; el.className = s === 'online' ? 'on' : 'off'; }
  },
  connect() {
    const s = session.get();
    if (!s || this.ws) return;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    // A browser cannot set headers on a WebSocket; the API takes the token as a subprotocol
    // and answers with `egw`, so the secret is not echoed back.
    const ws = new WebSocket(url, ['egw', 'bearer.' + s.token]);
    this.ws = ws;
    this.setStatus('connecting');
    ws.onopen = () => {
      this.delay = 500;
      this.setStatus('online');
      if (this.patterns.length) this.send({ type: 'subscribe', patterns: this.patterns });
      if (this.alarms) this.send({ type: 'subscribe_alarms' });
      this.ping = setInterval(() => this.send({ type: 'ping' }), 20000);
    };
    ws.onmessage = (e) => { const m = JSON.parse(e.data); for (const f of this.listeners) f(m); };
    ws.onclose = () => {
      clearInterval(this.ping);
      this.ws = null;
      this.setStatus('offline, retrying');
      if (session.get()) setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  },
  send(m) { if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(m)); },
  /** Replaces the value patterns (one page watches values at a time). */
  watch(patterns) {
    if (this.patterns.length) this.send({ type: 'unsubscribe' });
    this.patterns = patterns;
    if (patterns.length) this.send({ type: 'subscribe', patterns });
  },
  watchAlarms(on) {
    if (on === this.alarms) return;
    this.alarms = on;
    this.send({ type: on ? 'subscribe_alarms' : 'unsubscribe_alarms' });
  },
  close() { const ws = this.ws; this.ws = null; if (ws) { ws.onclose = null; ws.close(); } clearInterval(this.ping); this.setStatus('offline'); },
};

export const PRIORITIES = ['critical', 'high', 'medium', 'low'];
export function prioBadge(p) { return h('span.tag-badge.prio-' + p, { text: p }); }
export function alarmStateBadge(st) {
  const cls = /unack/.test(st) ? 'bad' : /shelved|suppress|disabled/.test(st) ? 'muted' : /active/.test(st) ? 'warn' : 'good';
  return stateBadge(st.replace(/_/g, ' '), cls);
}
