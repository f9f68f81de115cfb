// DOM helpers, notices and the parts of the page drawn straight from the state: the connection
// indicator, the header and the controls.

import { canPublish, notices, publisher, room, session, stageMoves } from './state.js';

export const $ = (id) => document.getElementById(id);

let liveTimer = null; // ticks the LIVE badge's clock

// For the test hook: whether the LIVE clock still ticks.
export const liveTimerRunning = () => liveTimer !== null;

export function stopLiveTimer() {
  clearInterval(liveTimer);
  liveTimer = null;
}

export function setConn(s, text) {
  $('conn').dataset.state = s;
  $('conn-text').textContent = text;
}

export function banner(text) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
}

// A passing notice: cleared after `ms` unless something else (the end of the live) replaced it.
export function flash(text, ms) {
  if (session.over) return;
  banner(text);
  setTimeout(() => { if ($('banner').textContent === text && !session.over) banner(''); }, ms);
}

// A server's message as a sentence: capitalised, with a full stop.
export const sentence = (s) => (s ? `${s[0].toUpperCase()}${s.slice(1)}${/[.!?]$/.test(s) ? '' : '.'}` : '');

export function initials(name) {
  return (name || '?').split(/\s+/).map((w) => w[0]).join('').slice(0, 2).toUpperCase();
}

export function renderHeader() {
  const r = room.info;
  if (!r) return;
  $('room-name').textContent = r.name;
  // Once the live has ended (or we left) nothing here is current any more: no LIVE, no count.
  const over = !!session.over || r.state === 'ended';
  // Held for its host, the live goes on (the notice above the stage says why).
  const onAir = r.state === 'live' || r.state === 'held';
  $('live-badge').hidden = over || !onAir;
  $('live-badge').title = room.profile ? `Live profile: ${room.profile.name}` : '';
  $('waiting-badge').hidden = over || r.state !== 'waiting';
  $('viewer-count').hidden = over;
  $('viewer-count').textContent = `${r.viewers} watching`;
  stopLiveTimer();
  if (!over && onAir && r.started_at) {
    const tick = () => {
      const s = Math.max(0, Math.floor((Date.now() - r.started_at) / 1000));
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
      $('live-timer').textContent = `${h ? h + ':' + String(m).padStart(2, '0') : m}:${String(sec).padStart(2, '0')}`;
    };
    tick();
    liveTimer = setInterval(tick, 1000);
  }
}

export function renderControls() {
  const role = session.me?.role ?? session.claims?.role;
  const publishes = canPublish(role);
  const over = !!session.over;
  // After the end only "Join again" (after a leave) is left to press.
  $('controls').hidden = over && session.over !== 'Left';
  $('publish-controls').hidden = !publishes || over;
  // The way onto the stage (viewers, moderators) and off it (co-hosts who hold a seat).
  const liveNow = room.info?.state === 'live' || room.info?.state === 'held';
  const req = stageMoves.request;
  const asking = !publishes && !!session.me && liveNow && !over;
  const seated = role === 'cohost' && (publisher.live || stageMoves.granted) && !over;
  $('stage-moves').hidden = !asking && !seated;
  $('ask-stage').hidden = !asking || req?.state === 'pending';
  $('ask-stage').textContent = req?.state === 'declined' ? 'Ask again' : 'Ask to join';
  $('cancel-request').hidden = !asking || req?.state !== 'pending';
  $('request-note').textContent = !asking || !req ? ''
    : req.state === 'pending' ? `Requested — #${req.position} in line` : 'The host declined your request.';
  $('step-down').hidden = !seated;
  $('end-live').hidden = role !== 'host' || over;
  $('studio').hidden = role !== 'host' || over;
  $('leave').hidden = over;
  $('quality').closest('label').hidden = over;
  $('rejoin').hidden = session.over !== 'Left';
  const go = $('go-live');
  go.textContent = role === 'host' ? 'Go live' : stageMoves.granted ? 'Go live in your seat' : 'Join as co-host';
  go.hidden = publisher.live;
  const mic = publisher.local?.getAudioTracks()[0];
  const cam = publisher.local?.getVideoTracks()[0];
  const micOff = mic ? !mic.enabled : false;
  const camOff = cam ? !cam.enabled : false;
  $('toggle-mic').textContent = micOff ? 'Mic off' : 'Mic on';
  $('toggle-mic').setAttribute('aria-pressed', String(micOff));
  $('toggle-mic').setAttribute('aria-label', micOff ? 'Unmute microphone' : 'Mute microphone');
  $('toggle-cam').textContent = camOff ? 'Camera off' : 'Camera on';
  $('toggle-cam').setAttribute('aria-pressed', String(camOff));
  $('toggle-cam').setAttribute('aria-label', camOff ? 'Turn camera on' : 'Turn camera off');
}

let heldTicker = null; // ticks the host's grace countdown

const minutes = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;

// The live's notices: the host reconnecting (with the grace left), the end nearing, audio only.
export function renderNotices() {
  const over = !!session.over;
  const held = !over && notices.heldUntil !== undefined;
  const h = $('held');
  h.hidden = !held;
  if (held) {
    const left = notices.heldUntil === null ? null : Math.max(0, Math.ceil((notices.heldUntil - Date.now()) / 1000));
    h.textContent = left === null ? 'The host is reconnecting…' : `The host is reconnecting… The live waits for ${minutes(left)}.`;
  }
  if (held && notices.heldUntil !== null && !heldTicker) heldTicker = setInterval(renderNotices, 1000);
  if ((!held || notices.heldUntil === null) && heldTicker) { clearInterval(heldTicker); heldTicker = null; }
  const w = notices.warning;
  $('warning').hidden = over || !w;
  $('warning').textContent = w ? sentence(w.message || `the live ends in ${Math.ceil(w.ends_in_secs / 60)} min`) : '';
  $('audio-only').hidden = over || !notices.audioOnly;
}

// A button with its label as text (never markup), an optional class, aria-label and
// data-key (kept focus across redraws), and its click handler.
export function button(label, onClick, { cls = '', aria = '', key = '' } = {}) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (cls) b.className = cls;
  if (aria) b.setAttribute('aria-label', aria);
  if (key) b.dataset.key = key;
  b.addEventListener('click', onClick);
  return b;
}
