// The upcoming page (/upcoming/{id}; docs/web-client.md): one scheduled live as anyone sees it,
// with a countdown; "Remind me" for a viewer who came with a token of the room (?token=), and the
// host's own controls (go live now, cancel). Everything here is the server API's
// (docs/api.md "Scheduled lives"); titles and descriptions go in as textContent only.

const $ = (id) => document.getElementById(id);
const id = decodeURIComponent(location.pathname.split('/')[2] || '');
const token = new URLSearchParams(location.search).get('token');
const POLL_MS = 15000; // the state is read again this often (the host may go live, or cancel)

let live = null;      // the schedule as the API last gave it
let ticker = null;

// The token's claims, read (not verified: the server does that) to choose what to show.
function claims() {
  try {
    const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b64));
  } catch { return null; }
}
const me = token ? claims() : null;
const isHost = () => !!me && me.role === 'host' && live && me.room === live.room;

async function call(method, path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch(path, { method, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error?.message || `HTTP ${r.status}`);
  return body;
}

const note = (text) => { $('up-note').textContent = text; };

const STATES = { scheduled: 'Upcoming', starting: 'Starting soon', live: 'LIVE', ended: 'Ended', cancelled: 'Cancelled' };

function when(secs) {
  const d = new Date(secs * 1000);
  return d.toLocaleString(undefined, { weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit' });
}

function tick() {
  const left = Math.max(0, live.starts_at * 1000 - Date.now());
  const s = Math.floor(left / 1000);
  $('up-d').textContent = String(Math.floor(s / 86400));
  $('up-h').textContent = String(Math.floor((s % 86400) / 3600));
  $('up-m').textContent = String(Math.floor((s % 3600) / 60));
  $('up-s').textContent = String(s % 60);
  $('up-countdown').setAttribute('aria-label', `Starts in ${Math.floor(s / 86400)} days, ${Math.floor((s % 86400) / 3600)} hours, ${Math.floor((s % 3600) / 60)} minutes`);
  if (left === 0 && ticker) {
    clearInterval(ticker);
    ticker = null;
    if (live.state === 'scheduled' || live.state === 'starting') note('Starting any moment now.');
  }
}

function render() {
  const upcoming = live.state === 'scheduled' || live.state === 'starting';
  document.title = `${live.title} · Onair`;
  $('upcoming').setAttribute('aria-busy', 'false');
  $('up-room').textContent = live.room;
  $('up-title').textContent = live.title;
  $('up-when').textContent = when(live.starts_at);
  $('up-description').textContent = live.description;
  const state = $('up-state');
  state.hidden = false;
  state.textContent = STATES[live.state] ?? live.state;
  state.className = live.state === 'live' ? 'badge' : 'badge badge-muted';
  const img = $('up-banner');
  // Only the server's own upload URL is used as an image source.
  const banner = typeof live.banner_url === 'string' && /^\/media\/schedules\/[A-Za-z0-9_-]+\/banner\?v=\d+$/.test(live.banner_url) ? live.banner_url : null;
  img.hidden = !banner;
  if (banner && img.getAttribute('src') !== banner) img.src = banner;
  $('up-countdown').hidden = !upcoming;
  if (upcoming && !ticker) {
    tick();
    ticker = setInterval(tick, 1000);
  }
  if (!upcoming && ticker) {
    clearInterval(ticker);
    ticker = null;
  }
  $('up-calendar').href = `/upcoming/${encodeURIComponent(live.id)}/calendar.ics`;
  $('up-calendar').hidden = !upcoming;
  const remind = $('up-remind');
  remind.hidden = !upcoming;
  remind.disabled = !token;
  remind.setAttribute('aria-pressed', String(!!live.reminded));
  remind.textContent = live.reminded ? 'Reminder set ✓' : 'Remind me';
  if (!token && upcoming) note('Open this page from the app you watch in to get a reminder.');
  $('up-watch').hidden = live.state !== 'live' || !token;
  if (token) $('up-watch').href = `/?token=${encodeURIComponent(token)}`;
  if (live.state === 'cancelled') note('This live was cancelled.');
  if (live.state === 'ended') note('This live has ended.');
  $('up-host').hidden = !isHost() || !upcoming;
  $('up-reminders').textContent = String(live.reminders ?? 0);
}

async function load() {
  try {
    live = await call('GET', `/api/v1/schedules/${encodeURIComponent(id)}`);
    render();
  } catch (e) {
    $('upcoming').setAttribute('aria-busy', 'false');
    $('up-title').textContent = 'No such live';
    note(e.message);
  }
}

async function toggleReminder() {
  const on = !live.reminded;
  $('up-remind').disabled = true;
  try {
    await call(on ? 'POST' : 'DELETE', `/api/v1/schedules/${encodeURIComponent(id)}/reminder`);
    live.reminded = on;
    note(on ? 'We will remind you 15 minutes before it starts, and when it starts.' : 'No reminder.');
  } catch (e) {
    note(`Could not ${on ? 'set' : 'remove'} the reminder: ${e.message}`);
  }
  render();
}

async function start() {
  try {
    await call('POST', `/api/v1/schedules/${encodeURIComponent(id)}/start`);
    location.href = `/?token=${encodeURIComponent(token)}`;
  } catch (e) { note(`Could not start: ${e.message}`); }
}

async function cancel() {
  if (!confirm(`Cancel “${live.title}”? Everyone who asked for a reminder is told.`)) return;
  try {
    live = { ...live, ...(await call('DELETE', `/api/v1/schedules/${encodeURIComponent(id)}`)) };
    render();
  } catch (e) { note(`Could not cancel: ${e.message}`); }
}

$('up-remind').addEventListener('click', toggleReminder);
$('up-start').addEventListener('click', start);
$('up-cancel').addEventListener('click', cancel);
load();
setInterval(() => { if (live) load(); }, POLL_MS);
// For the browser test: the schedule as the page has it.
window.onairUpcoming = () => live;
