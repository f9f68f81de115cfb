// The stage: up to four tiles (one per publisher on a seat), their sound, our own preview when
// no seat is free, and the drawn size of each remote video reported to the server. And who gets
// a seat (docs/protocol.md §6.1), as the host sees it: the requests to answer, the people to
// invite, "Remove from stage" on each tile. (The participant's own side — asking, answering an
// invitation, going live in the seat, leaving it — is in publish.js.)

import { isStudio, notices, publisher, removeParticipant, room, session, stageMoves, subscriber } from './state.js';
import { $, flash, initials, renderControls, renderHeader, renderNotices, sentence } from './ui.js';
import { handlers, send } from './signal.js';
import { commentActions } from './chat.js';

// Tell the server how large each remote video is drawn, so it sends the smallest layer that
// fills it (a thumbnail never pulls 720p).
const sizeObserver = new ResizeObserver((entries) => { for (const e of entries) reportSize(e.target); });

handlers.participant_joined = (msg) => { room.participants.set(msg.participant.id, msg.participant); renderStage(); renderStagePanel(); };
handlers.participant_left = (msg) => {
  removeParticipant(msg.participant);
  stageMoves.invites.delete(msg.participant);
  renderStage();
  renderStagePanel();
};
handlers.track_published = (msg) => { room.tracks.set(msg.track.id, msg.track); renderStage(); };
handlers.track_unpublished = (msg) => { room.tracks.delete(msg.track); renderStage(); };
handlers.track_muted = (msg) => {
  const t = room.tracks.get(msg.track);
  if (t) { t.muted = msg.muted; renderStage(); }
};
// Seats may have freed; the live may be held for its host or resumed (host_status says so
// first, with the grace left; a room_update alone shows the notice without a countdown).
handlers.room_update = (msg) => {
  room.info = msg.room;
  if (msg.room.state === 'held') notices.heldUntil ??= null;
  else notices.heldUntil = undefined;
  renderHeader();
  renderControls();
  renderNotices();
  renderStage();
  renderStagePanel();
};

// All seats are taken by others (we hold none: a seat is ours once we publish, or once the host
// gave us one).
function seatsFull() {
  const r = room.info;
  if (!r || publisher.live || stageMoves.granted) return false;
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
      if (!mine) {
        // The host takes anyone but itself off stage (hidden for everyone else, below).
        const off = document.createElement('button');
        off.type = 'button';
        off.className = 'tile-remove';
        off.textContent = 'Remove from stage';
        off.addEventListener('click', () => send({ type: 'remove_from_stage', participant: id }));
        tile.append(off);
      }
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
    const off = tile.querySelector('.tile-remove');
    if (off) {
      off.hidden = session.me?.role !== 'host' || p?.role === 'host' || !!session.over;
      off.setAttribute('aria-label', `Remove ${p?.name ?? 'this guest'} from stage`);
    }
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

// ---- Who gets a seat: the host's side (and moderators', when the host lets them answer) ----

const isHost = () => session.me?.role === 'host' && !session.over;

// Whom the host can invite: people in the room who cannot publish (not studio feeds).
const invitable = (p) => p && p.id !== session.me?.id && !isStudio(p) && (p.role === 'viewer' || p.role === 'moderator');

// The participant of an identity (comments carry identities), if it is in the room now.
function participantOf(identity) {
  for (const p of room.participants.values()) if (p.identity === identity) return p;
  return null;
}

const INVITE_STATES = { sent: 'invited', accepted: 'accepted', declined: 'declined', failed: 'could not join: the stage was full' };

let statusTimer = null;
let fullSaid = false; // the status says the stage is full (until a seat frees or the queue moves)
// A passing line in the stage panel (answers, refusals).
function stageStatus(text, ms = 8000) {
  fullSaid = false;
  $('stage-status').textContent = text;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { $('stage-status').textContent = ''; }, ms);
}

function smallButton(label, run, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener('click', run);
  return b;
}

export function renderStagePanel() {
  const host = isHost();
  const r = room.info;
  if (fullSaid && r && r.publishers < (r.max_publishers || 4)) stageStatus(''); // a seat is free again
  const show = (host || stageMoves.managing) && !session.over;
  $('stage-panel').hidden = !show;
  if (!show) return;
  $('mods-manage-row').hidden = !host;
  $('mods-manage').checked = stageMoves.moderatorsManage;
  $('request-count').textContent = String(stageMoves.queue.length);
  $('request-count').classList.toggle('attention', stageMoves.queue.length > 0);
  $('queue-empty').hidden = stageMoves.queue.length > 0;
  $('request-queue').replaceChildren(...stageMoves.queue.map((p, i) => {
    const li = document.createElement('li');
    li.dataset.participant = p.id;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = `${i + 1}. ${p.name}`;
    const row = document.createElement('span');
    row.className = 'row';
    row.append(
      smallButton('Accept', () => send({ type: 'answer_stage_request', participant: p.id, accept: true }), 'primary'),
      smallButton('Decline', () => send({ type: 'answer_stage_request', participant: p.id, accept: false })),
    );
    li.append(who, row);
    return li;
  }));
  // The host's list of people to invite (moderators answer requests, they do not invite).
  $('people').hidden = !host;
  const people = [...room.participants.values()].filter(invitable);
  $('people-count').textContent = String(people.length);
  $('people-list').replaceChildren(...people.map((p) => {
    const li = document.createElement('li');
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = p.name;
    const state = stageMoves.invites.get(p.id);
    if (state) {
      const s = document.createElement('span');
      s.className = 'invite-state';
      s.textContent = ` · ${INVITE_STATES[state] ?? state}`;
      who.append(s);
    }
    li.append(who, smallButton(state === 'sent' ? 'Invited' : 'Invite on stage', () => invite(p.id)));
    li.lastChild.disabled = state === 'sent';
    return li;
  }));
}

function invite(id) {
  send({ type: 'invite_to_stage', participant: id });
}

// The host's item in each comment's menu: invite its author, if they are here and may be invited.
commentActions.push((c) => {
  if (!isHost()) return [];
  const p = participantOf(c.identity);
  if (!invitable(p) || stageMoves.invites.get(p.id) === 'sent') return [];
  return [{ label: 'Invite on stage', run: () => invite(p.id) }];
});

handlers.stage_requests = (msg) => {
  stageMoves.queue = msg.requests;
  stageMoves.moderatorsManage = msg.moderators_manage;
  stageMoves.managing = session.me?.role === 'host' || (session.me?.role === 'moderator' && msg.moderators_manage);
  renderStagePanel();
};

handlers.stage_invite_state = (msg) => {
  stageMoves.invites.set(msg.participant, msg.state);
  const name = room.participants.get(msg.participant)?.name ?? 'The viewer';
  const says = { sent: `Invitation sent to ${name}.`, accepted: `${name} accepted: they are going live.`,
    declined: `${name} declined the invitation.`, failed: `${name} accepted, but the stage was full.` };
  stageStatus(says[msg.state] ?? `${name}: ${msg.state}`);
  renderStagePanel();
};

// A refused stage move of the host's (or a moderator's): said in the panel. A full stage keeps
// the request queued, and says so.
export function stageError(msg) {
  if (!['answer_stage_request', 'invite_to_stage', 'remove_from_stage', 'stage_settings'].includes(msg.request)) return false;
  if ($('stage-panel').hidden) {
    flash(sentence(msg.message), 6000); // not ours to answer (any more): say so where we look
  } else if (msg.code === 'stage_full' && msg.request === 'answer_stage_request') {
    stageStatus('The stage is full; the request stays in the queue. Free a seat, then accept again.', 20_000);
    fullSaid = true;
  } else {
    stageStatus(sentence(msg.message));
  }
  return true;
}

export function wireStagePanel() {
  $('mods-manage').addEventListener('change', () => send({ type: 'stage_settings', moderators_manage: $('mods-manage').checked }));
}
