// The host's archive on the room page (docs/api.md "Archive"): the Archive panel lists this
// room's recorded lives, newest first — when, how long, where the recording stands, when it is
// deleted — with Play (the stage video in a dialog), Download, each publisher's raw file, and
// Delete. Read with the page's own token, hosts only; it stays after the live has ended (that is
// when it matters). Once a live ends the list is read again every 10 s while an entry is still
// being recorded or its video built. Text from the server goes in as textContent; links go only
// to the server's own signed file URLs.

import { room, session } from './state.js';
import { $, button } from './ui.js';
import { apiCall } from './api.js';

const POLL_MS = 10_000;          // the list is read again this often while an entry is busy
const AFTER_END_MS = 60_000;     // after the end, read it this long even before an entry is busy
const MAX_POLLS = 180;           // ... but not for ever (30 min) if an entry never settles

let entries = [];      // the room's entries as the API last listed them, newest first
let loadSeq = 0;       // answers of older list requests are dropped
let pollTimer = null;
let polls = 0;         // polls in a row with something still busy
let endedAt = null;    // when this page saw its live end
let playing = null;    // the id of the entry the player shows
let listFailed = false;
let statusTimer = null;

const isHost = () => (session.me?.role ?? session.claims?.role) === 'host' && session.over !== 'Removed';
const liveOn = () => !session.over && (room.info?.state === 'live' || room.info?.state === 'held');
// Being recorded (the live is on), or the video being built: not done, not deletable.
const busy = (e) => e.state === 'recording' || e.state === 'processing';

function status(text, ms = 0) {
  $('archive-status').textContent = text;
  clearTimeout(statusTimer);
  if (text && ms) statusTimer = setTimeout(() => { $('archive-status').textContent = ''; }, ms);
}

const when = (ms) => new Date(ms).toLocaleString(undefined,
  { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
const day = (ms) => new Date(ms).toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

// 75_000 → "1:15", 3_725_000 → "1:02:05".
function clock(ms) {
  const s = Math.max(0, Math.round((Number(ms) || 0) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

function size(bytes) {
  const n = Number(bytes) || 0;
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(n / 1e3))} kB`;
}

// A file link as the server writes it (/api/v1/archive/{id}/files/{name}?exp=…&sig=…), or null:
// nothing else goes into an href or a src.
function fileUrl(raw) {
  return typeof raw === 'string' && /^\/api\/v1\/archive\/[A-Za-z0-9_-]+\/files\/[A-Za-z0-9._-]+\?[A-Za-z0-9=&_.%-]+$/.test(raw) ? raw : null;
}
const downloadUrl = (url) => `${url}&download=1`;

function stateText(e) {
  const why = e.error ? ` — ${e.error}` : '';
  switch (e.state) {
    case 'recording': return 'Recording…';
    case 'processing': return 'Preparing the video…';
    case 'ready': return 'Ready';
    case 'raw_only': return `Raw files only${why}`;
    case 'failed': return `Failed${why}`;
    default: return String(e.state ?? '');
  }
}

function link(label, href, { cls = '', aria = '', key = '', title = '' } = {}) {
  const a = document.createElement('a');
  a.textContent = label;
  a.href = href;
  a.setAttribute('download', '');
  if (cls) a.className = cls;
  if (aria) a.setAttribute('aria-label', aria);
  if (title) a.title = title;
  if (key) a.dataset.key = key;
  return a;
}

// The raw files: one per publisher and stretch on stage ("Ann · 1:02"), a second stretch of the
// same person numbered; the file's name, size and any trouble with it (cut short) as its tooltip.
function rawList(e) {
  const files = (e.raw ?? []).filter((f) => fileUrl(f.url));
  if (!files.length) return null;
  const ul = document.createElement('ul');
  ul.className = 'archive-raw';
  ul.setAttribute('aria-label', 'Raw files, one per publisher');
  const seen = new Map();
  for (const f of files) {
    const who = f.name_shown || f.identity || f.name;
    const n = (seen.get(who) ?? 0) + 1;
    seen.set(who, n);
    const long = f.started_at && f.ended_at ? ` · ${clock(f.ended_at - f.started_at)}` : '';
    const li = document.createElement('li');
    li.append(link(`${who}${n > 1 ? ` (${n})` : ''}${long}`, downloadUrl(fileUrl(f.url)), {
      title: `${f.name} · ${size(f.bytes)}${f.error ? ` · ${f.error}` : ''}`, key: `${e.id}:raw:${f.name}` }));
    ul.append(li);
  }
  return ul;
}

function item(e) {
  const li = document.createElement('li');
  li.className = 'archive-item';
  li.dataset.id = e.id;
  li.dataset.state = e.state;
  const title = `${when(e.started_at)} · ${clock(e.duration_ms)}`;
  const head = document.createElement('p');
  head.className = 'archive-when';
  head.textContent = title;
  const state = document.createElement('p');
  state.className = 'archive-state';
  state.textContent = stateText(e);
  const expiry = document.createElement('p');
  expiry.className = 'archive-expiry';
  expiry.textContent = `Deleted on ${day(e.expires_at)}`;
  li.append(head, state, expiry);
  const row = document.createElement('div');
  row.className = 'archive-actions';
  const video = fileUrl(e.video?.url);
  if (video) {
    row.append(button('Play', () => play(e, video, title), { cls: 'primary', aria: `Play the live of ${title}`, key: `${e.id}:play` }));
    row.append(link('Download', downloadUrl(video), { cls: 'button-link', aria: `Download the video of ${title}`,
      title: e.video.bytes ? size(e.video.bytes) : '', key: `${e.id}:download` }));
  }
  if (!busy(e)) {
    row.append(button('Delete', () => remove(e, title), { cls: 'danger', aria: `Delete the recording of ${title}`, key: `${e.id}:delete` }));
  }
  if (row.childElementCount) li.append(row);
  const raw = rawList(e);
  if (raw) li.append(raw);
  return li;
}

export function renderArchive() {
  const show = isHost();
  $('archive-tools').hidden = !show;
  if (!show) {
    if ($('archive-dialog').open) $('archive-dialog').close();
    return;
  }
  $('archive-count').textContent = String(entries.length);
  const label = `Archive: ${entries.length} recorded ${entries.length === 1 ? 'live' : 'lives'}`;
  $('archive-toggle').title = label;
  $('archive-toggle').setAttribute('aria-label', label);
  // Drawn again from scratch (every 10 s while a video is being built): the keyboard focus goes
  // back to the same control.
  const focused = document.activeElement?.closest?.('#archive-list') ? document.activeElement.dataset.key : null;
  $('archive-list').replaceChildren(...entries.map(item));
  $('archive-empty').hidden = entries.length > 0;
  if (focused) $('archive-list').querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus({ preventScroll: true });
  if (playing && !entries.some((e) => e.id === playing) && $('archive-dialog').open) $('archive-dialog').close();
}

function schedulePoll() {
  clearTimeout(pollTimer);
  pollTimer = null;
  if (!isHost()) return;
  // An entry still `recording` once the live is off will turn `processing`, then settle.
  const waiting = entries.some((e) => e.state === 'processing' || (e.state === 'recording' && !liveOn()));
  const justEnded = endedAt !== null && Date.now() - endedAt < AFTER_END_MS;
  polls = waiting ? polls + 1 : 0;
  if ((waiting || justEnded) && polls <= MAX_POLLS) pollTimer = setTimeout(loadArchive, POLL_MS);
}

// After a join, when the panel opens, after the end, and while a video is being built.
export async function loadArchive() {
  clearTimeout(pollTimer);
  pollTimer = null;
  if (!isHost()) return renderArchive();
  const seq = ++loadSeq;
  try {
    const data = await apiCall('GET', `/api/v1/rooms/${encodeURIComponent(session.claims?.room ?? '')}/archive`);
    if (seq !== loadSeq) return;
    entries = Array.isArray(data?.entries) ? data.entries : [];
    if (listFailed) status('');
    listFailed = false;
  } catch (e) {
    if (seq !== loadSeq) return;
    listFailed = true;
    status(`Could not list the recordings: ${e.message}`);
  }
  renderArchive();
  schedulePoll();
}

// The live ended (or the page found it over): its entry goes from recording to processing to
// ready within a few minutes; follow it.
export function archiveLiveEnded() {
  endedAt = Date.now();
  polls = 0;
  loadArchive();
}

function play(e, url, title) {
  const v = $('archive-video');
  playing = e.id;
  $('archive-dialog-title').textContent = `The live of ${title}`;
  const who = [...new Set((e.timeline ?? []).map((t) => t.name_shown || t.identity).filter(Boolean))];
  $('archive-dialog-note').textContent = who.length ? `On stage: ${who.join(', ')}` : '';
  const dl = $('archive-dialog-download');
  dl.href = downloadUrl(url);
  dl.setAttribute('aria-label', `Download the video of ${title}`);
  v.src = url;
  if (!$('archive-dialog').open) $('archive-dialog').showModal();
  v.play().catch(() => { /* the controls are there: the host presses play */ });
}

async function remove(e, title) {
  if (!confirm(`Delete the recording of ${title}? Its video and raw files are deleted for good.`)) return;
  try {
    await apiCall('DELETE', `/api/v1/archive/${encodeURIComponent(e.id)}`);
    if (playing === e.id && $('archive-dialog').open) $('archive-dialog').close();
    status(`The recording of ${title} was deleted.`, 8000);
  } catch (err) {
    status(`Could not delete it: ${err.message}`);
  }
  loadArchive();
}

export function wireArchive() {
  $('archive-toggle').addEventListener('click', () => {
    const open = $('archive-panel').hidden;
    $('archive-panel').hidden = !open;
    $('archive-toggle').setAttribute('aria-expanded', String(open));
    if (open) loadArchive();
  });
  $('archive-dialog-close').addEventListener('click', () => $('archive-dialog').close());
  // However the dialog closes (Close, Escape), the video stops and lets go of its link.
  $('archive-dialog').addEventListener('close', () => {
    const v = $('archive-video');
    v.pause();
    v.removeAttribute('src');
    v.load();
    playing = null;
  });
  renderArchive();
}
