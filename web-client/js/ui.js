// DOM helpers, notices and the parts of the page drawn straight from the state: the connection
// indicator, the header and the controls.

import { publisher, room, session } from './state.js';

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
  $('live-badge').hidden = over || r.state !== 'live';
  $('waiting-badge').hidden = over || r.state !== 'waiting';
  $('viewer-count').hidden = over;
  $('viewer-count').textContent = `${r.viewers} watching`;
  stopLiveTimer();
  if (!over && r.state === 'live' && r.started_at) {
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
  const canPublish = role === 'host' || role === 'cohost';
  const over = !!session.over;
  // After the end only "Join again" (after a leave) is left to press.
  $('controls').hidden = over && session.over !== 'Left';
  $('publish-controls').hidden = !canPublish || over;
  $('end-live').hidden = role !== 'host' || over;
  $('studio').hidden = role !== 'host' || over;
  $('leave').hidden = over;
  $('quality').closest('label').hidden = over;
  $('rejoin').hidden = session.over !== 'Left';
  const go = $('go-live');
  go.textContent = role === 'host' ? 'Go live' : 'Join as co-host';
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
