// The host's scheduled lives on the room page (docs/api.md "Scheduled lives"): the Scheduled
// panel lists this room's upcoming lives (open the page, go live with one, cancel one) and the
// dialog announces a new one, with an optional banner. The server API is called with the page's
// own token; only the host sees this (moderators do not schedule). Titles go in as textContent.

import { session, token } from './state.js';
import { $ } from './ui.js';
import { toggle } from './commerce.js';
import { apiCall } from './api.js';

let upcoming = [];

const isHost = () => (session.me?.role ?? session.claims?.role) === 'host' && !!session.me && !session.over;

const api = (method, path, body = undefined, contentType = undefined) => apiCall(method, `/api/v1/schedules${path}`, body, contentType);

const status = (text) => { $('schedule-status').textContent = text; };

function when(secs) {
  return new Date(secs * 1000).toLocaleString(undefined, { weekday: 'short', day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
}

function button(text, onClick, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  if (cls) b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

function item(s) {
  const li = document.createElement('li');
  li.className = 'shop-item';
  const info = document.createElement('div');
  info.className = 'shop-info';
  const title = document.createElement('a');
  title.className = 'product-title';
  title.textContent = s.title;
  title.href = `/upcoming/${encodeURIComponent(s.id)}?token=${encodeURIComponent(token)}`;
  title.target = '_blank';
  title.rel = 'noopener';
  const meta = document.createElement('p');
  meta.className = 'note';
  meta.textContent = s.state === 'starting' ? `${when(s.starts_at)} · starts when you go live` : when(s.starts_at);
  info.append(title, meta);
  const row = document.createElement('div');
  row.className = 'shop-actions';
  if (s.state === 'scheduled') {
    row.append(button('Go live with this', async () => {
      try {
        const v = await api('POST', `/${encodeURIComponent(s.id)}/start`);
        status(v.state === 'live' ? `“${s.title}” is this live now.` : `“${s.title}” starts when you go live.`);
      } catch (e) { status(`Could not start it: ${e.message}`); }
      loadSchedule();
    }));
  }
  row.append(button('Cancel', async () => {
    if (!confirm(`Cancel “${s.title}”? Everyone who asked for a reminder is told.`)) return;
    try {
      await api('DELETE', `/${encodeURIComponent(s.id)}`);
      status(`“${s.title}” was cancelled.`);
    } catch (e) { status(`Could not cancel it: ${e.message}`); }
    loadSchedule();
  }, 'danger'));
  li.append(info, row);
  return li;
}

export function renderSchedule() {
  $('schedule-toggle').hidden = !isHost();
  $('schedule-count').textContent = String(upcoming.length);
  $('schedule-list').replaceChildren(...upcoming.map(item));
  $('schedule-empty').hidden = upcoming.length > 0;
}

// After a join (session.js): the room's upcoming lives, for its host.
export async function loadSchedule() {
  if (!isHost()) return renderSchedule();
  try {
    const room = encodeURIComponent(session.claims?.room ?? '');
    upcoming = (await api('GET', `?room=${room}`)).schedules ?? [];
  } catch (e) { status(`Could not list scheduled lives: ${e.message}`); }
  renderSchedule();
}

function formError(text) {
  $('schedule-form-error').hidden = !text;
  $('schedule-form-error').textContent = text ?? '';
}

async function submit(e) {
  e.preventDefault();
  formError(null);
  const at = new Date($('schedule-at').value);
  if (Number.isNaN(at.getTime())) return formError('Pick a date and time.');
  const body = { room: session.claims?.room, title: $('schedule-title').value, description: $('schedule-description').value,
    starts_at: Math.floor(at.getTime() / 1000) };
  $('schedule-submit').disabled = true;
  try {
    const s = await api('POST', '', body);
    const file = $('schedule-banner').files[0];
    if (file) {
      try {
        await api('PUT', `/${encodeURIComponent(s.id)}/banner`, file, file.type || 'application/octet-stream');
      } catch (err) {
        status(`Scheduled, but the banner was refused: ${err.message}`);
      }
    }
    $('schedule-form').reset();
    $('schedule-dialog').close();
    if (!file) status(`“${s.title}” is scheduled.`);
    loadSchedule();
  } catch (err) {
    formError(err.message ? `${err.message[0].toUpperCase()}${err.message.slice(1)}.` : 'Refused.');
  } finally {
    $('schedule-submit').disabled = false;
  }
}

export function wireSchedule() {
  $('schedule-toggle').addEventListener('click', () => toggle('schedule-toggle', loadSchedule));
  $('schedule-new').addEventListener('click', () => {
    // Tomorrow at this hour, to the minute, in the host's own time zone.
    const d = new Date(Date.now() + 86_400_000);
    d.setSeconds(0, 0);
    const local = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    if (!$('schedule-at').value) $('schedule-at').value = local;
    formError(null);
    $('schedule-dialog').showModal();
  });
  $('schedule-cancel').addEventListener('click', () => $('schedule-dialog').close());
  $('schedule-form').addEventListener('submit', submit);
  $('schedule-form').addEventListener('input', () => formError(null));
}
