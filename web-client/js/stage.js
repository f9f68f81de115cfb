// The stage: up to four tiles (one per publisher on a seat), their sound, our own preview when
// no seat is free, and the drawn size of each remote video reported to the server.

import { isStudio, publisher, removeParticipant, room, session, subscriber } from './state.js';
import { $, initials, renderHeader } from './ui.js';
import { handlers, send } from './signal.js';

// Tell the server how large each remote video is drawn, so it sends the smallest layer that
// fills it (a thumbnail never pulls 720p).
const sizeObserver = new ResizeObserver((entries) => { for (const e of entries) reportSize(e.target); });

handlers.participant_joined = (msg) => { room.participants.set(msg.participant.id, msg.participant); renderStage(); };
handlers.participant_left = (msg) => { removeParticipant(msg.participant); renderStage(); };
handlers.track_published = (msg) => { room.tracks.set(msg.track.id, msg.track); renderStage(); };
handlers.track_unpublished = (msg) => { room.tracks.delete(msg.track); renderStage(); };
handlers.track_muted = (msg) => {
  const t = room.tracks.get(msg.track);
  if (t) { t.muted = msg.muted; renderStage(); }
};
handlers.room_update = (msg) => { room.info = msg.room; renderHeader(); renderStage(); }; // seats may have freed

// All seats are taken by others (we hold none: a seat is ours once we publish).
function seatsFull() {
  const r = room.info;
  if (!r || publisher.live) return false;
  return r.publishers >= (r.max_publishers || 4);
}

function onStage() {
  // Publishers with at least one track, plus ourselves while we publish.
  const ids = [];
  for (const t of room.tracks.values()) if (!ids.includes(t.participant)) ids.push(t.participant);
  // Our own camera shows as soon as the preview runs (publishers see themselves before going
  // live) if a seat is free for it; if not, it shows below the stage (renderSelfPreview).
  if (publisher.local && session.me && !ids.includes(session.me.id) && ids.length < 4 && !seatsFull()) ids.push(session.me.id);
  return ids.slice(0, 4);
}

// A publisher whose camera runs but who has no place on a full stage still sees their camera,
// with a note that says why it is not on stage.
function renderSelfPreview(ids) {
  const box = $('self-preview');
  const v = $('self-video');
  const show = !!(publisher.local && session.me && !ids.includes(session.me.id));
  box.hidden = !show;
  if (!show) { if (v.srcObject) v.srcObject = null; return; }
  if (v.srcObject !== publisher.local) v.srcObject = publisher.local;
  const cam = publisher.local.getVideoTracks()[0];
  const tile = box.querySelector('.tile');
  tile.classList.toggle('cam-off', !cam?.enabled);
  tile.dataset.initials = initials(session.me.name);
  const r = room.info;
  const max = r?.max_publishers || 4;
  $('self-note').textContent = `The stage is full (${Math.max(r?.publishers ?? max, ids.length)} of ${max}). `
    + `Only you see this preview; press “${$('go-live').textContent}” when a seat frees up.`;
}

export function renderStage() {
  const stage = $('stage');
  const ids = onStage();
  stage.dataset.count = String(ids.length);
  const keep = new Set(ids);
  for (const tile of stage.querySelectorAll('.tile')) if (!keep.has(tile.dataset.participant)) tile.remove();
  for (const id of ids) {
    let tile = stage.querySelector(`[data-participant="${CSS.escape(id)}"]`);
    const p = room.participants.get(id);
    const mine = id === session.me?.id;
    if (!tile) {
      tile = document.createElement('div');
      tile.className = 'tile';
      tile.dataset.participant = id;
      const v = document.createElement('video');
      v.autoplay = true;
      v.playsInline = true;
      v.muted = true; // sound plays through the hidden audio elements below
      v.addEventListener('playing', () => noteFirstFrame(v));
      if (!mine) sizeObserver.observe(v);
      const label = document.createElement('div');
      label.className = 'name';
      tile.append(v, label);
      stage.insertBefore(tile, $('unmute')); // the unmute button stays last, below the tiles
    }
    const v = tile.querySelector('video');
    const stream = mine ? publisher.local : subscriber.streams.get(id);
    if (stream && v.srcObject !== stream) v.srcObject = stream;
    const tracks = [...room.tracks.values()].filter((t) => t.participant === id);
    const camOff = mine ? !publisher.local?.getVideoTracks()[0]?.enabled : tracks.some((t) => t.kind === 'video' && t.muted);
    const micOff = mine ? !publisher.local?.getAudioTracks()[0]?.enabled : tracks.some((t) => t.kind === 'audio' && t.muted);
    tile.classList.toggle('cam-off', !!camOff);
    tile.dataset.initials = initials(p?.name);
    const label = tile.querySelector('.name');
    label.textContent = `${p?.name ?? 'Guest'}${mine ? ' (you)' : ''}${p?.role === 'host' ? ' · host' : ''}${isStudio(p) ? ' · studio' : ''}`;
    tile.classList.toggle('studio', isStudio(p));
    tile.classList.toggle('reconnecting', room.studioFeeds.get(id) === 'reconnecting');
    if (micOff) { const f = document.createElement('span'); f.className = 'flag'; f.textContent = 'mic off'; label.append(f); }
    if (camOff) { const f = document.createElement('span'); f.className = 'flag'; f.textContent = 'cam off'; label.append(f); }
    if (!mine) { attachAudio(id, stream); reportSize(v); }
  }
  for (const el of document.querySelectorAll('audio[data-participant]')) {
    if (!keep.has(el.dataset.participant) || el.dataset.participant === session.me?.id) el.remove();
  }
  renderSelfPreview(ids);
}

function reportSize(video) {
  const id = video.closest('.tile')?.dataset.participant;
  const track = [...room.tracks.values()].find((t) => t.participant === id && t.kind === 'video');
  if (!track) return;
  const r = video.getBoundingClientRect();
  const height = Math.round(r.height * (window.devicePixelRatio || 1));
  const width = Math.round(r.width * (window.devicePixelRatio || 1));
  if (subscriber.sentSizes.get(track.id) === height) return;
  subscriber.sentSizes.set(track.id, height);
  send({ type: 'video_size', track: track.id, width, height });
}

function attachAudio(id, stream) {
  if (!stream) return;
  let el = document.querySelector(`audio[data-participant="${CSS.escape(id)}"]`);
  if (!el) {
    el = document.createElement('audio');
    el.dataset.participant = id;
    el.autoplay = true;
    document.body.append(el);
  }
  if (el.srcObject !== stream) {
    el.srcObject = stream;
    el.play().catch(() => { subscriber.audioBlocked = true; $('unmute').hidden = false; });
  }
}

function noteFirstFrame(video) {
  if (subscriber.firstFrameAt !== null) return;
  const mark = () => { if (subscriber.firstFrameAt === null) subscriber.firstFrameAt = performance.now(); };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(mark); else mark();
}

// Autoplay with sound was blocked: one tap plays every publisher's audio.
export function wireUnmute() {
  $('unmute').addEventListener('click', () => {
    for (const el of document.querySelectorAll('audio[data-participant]')) el.play().catch(() => {});
    subscriber.audioBlocked = false;
    $('unmute').hidden = true;
  });
}
