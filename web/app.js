// The shell: hash routes (#/overview, #/tags, ...), the sign-in form, the header, and
// the hand-over between pages (each page module exports `render(main)` and may return
// a cleanup function that the router calls when the operator leaves the page).
import { api, h, live, session, ApiError } from './core.js';

const PAGES = {
  overview: () => import('./pages/overview.js'),
  devices: () => import('./pages/devices.js'),
  tags: () => import('./pages/tags.js'),
  alarms: () => import('./pages/alarms.js'),
  audit: () => import('./pages/audit.js'),
  system: () => import('./pages/system.js'),
};

let cleanup = null;

function loginPage(main) {
  document.getElementById('top').hidden = true;
  const err = h('p.error#login-error', { role: 'alert', hidden: true });
  const user = h('input#login-user', { name: 'user', autocomplete: 'username', required: true });
  const pass = h('input#login-password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', {
    onsubmit: async (e) => {
      e.preventDefault();
      err.hidden = true;
      try {
        const s = await api('POST', '/api/v1/auth/login', { user: user.value, password: pass.value });
        session.set({ token: s.token, user: s.user, role: s.role, expires: s.expires_at_ms });
        location.hash = '#/overview';
      } catch (x) {
        err.textContent = x instanceof ApiError && x.status === 429 ? 'Too many failed sign-ins; wait and try again.' :
          x instanceof ApiError && x.status === 401 ? 'Wrong user name or password.' : 'Sign-in failed: ' + x.message;
        err.hidden = false;
      }
    },
  },
  h('label', {}, 'User', user),
  h('label', {}, 'Password', pass),
  err,
  h('button.primary#login-submit', { type: 'submit' }, 'Sign in'));
  main.replaceChildren(h('section.panel.login', {}, h('h1', { text: 'Sign in to edge-gateway' }), form));
  user.focus();
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* a page's cleanup must not block the next page */ } cleanup = null; }
  const main = document.getElementById('main');
  const name = (location.hash.replace(/^#\/?/, '').split(/[/?]/)[0]) || 'overview';
  const s = session.get();
  if (!s || name === 'login') { live.close(); return loginPage(main); }
  const top = document.getElementById('top');
  top.hidden = false;
  document.getElementById('who').textContent = `${s.user} (${s.role})`;
  for (const a of document.querySelectorAll('#nav a')) {
    a.hidden = a.dataset.role ? !session.can(a.dataset.role) : false;
    if (a.getAttribute('href') === '#/' + name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  live.connect();
  const load = PAGES[name];
  if (!load) { main.replaceChildren(h('p.error', { text: 'No such page.' })); return; }
  main.replaceChildren(h('p.muted', { text: 'Loading…' }));
  live.watch([]);
  live.watchAlarms(true);
  const mod = await load();
  const c = await mod.render(main);
  cleanup = typeof c === 'function' ? c : null;
  document.title = name[0].toUpperCase() + name.slice(1) + ' · edge-gateway';
  main.focus({ preventScroll: true });
}

// The active-alarm count in the header, kept live for every page.
let unacked = new Map();
async function refreshAlarmCount() {
  if (!session.get()) return;
  try {
    const a = await api('GET', '/api/v1/alarms/active');
    unacked = new Map(a.alarms.map((x) => [x.id, x.state]));
  } catch { unacked = new Map(); }
  paintCount();
}
function paintCount() {
  if (!document.getElementById('nav-alarms')) return;
  const n = [...unacked.values()].filter((st) => /unack/.test(st)).length;
  const el = document.getElementById('nav-alarms');
  el.textContent = n ? String(n) : '';
  el.title = n ? `${n} unacknowledged` : '';
  el.setAttribute('aria-label', n ? `${n} unacknowledged` : 'none unacknowledged');
}
let countTimer;
live.on((m) => {
  if (m.type === 'alarm' || m.type === 'alarms') { clearTimeout(countTimer); countTimer = setTimeout(refreshAlarmCount, 200); }
});

document.getElementById('logout').addEventListener('click', async () => {
  try { await api('POST', '/api/v1/auth/logout'); } catch { /* the session ends here either way */ }
  session.clear();
  live.close();
  location.hash = '#/login';
});
window.addEventListener('hashchange', () => { route(); refreshAlarmCount(); });
route();
refreshAlarmCount();
