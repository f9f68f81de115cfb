// Onair browser client: co-hosts go live, viewers watch. Plain ES module, no build step.
// Protocol: docs/protocol.md. Two peer connections: `pub` (we offer our camera and mic) and
// `sub` (the server offers everyone else's tracks).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get('token');

// Simulcast layers (LiveKit's rid names, which the SFU understands): quarter, half, full.
const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

// Capture size: 720p by default (three simulcast layers: 180p, 360p, 720p). `?capture=360` asks
// for 640x360 (browsers then send two layers), for weak machines and tests.
const CAPTURE = params.get('capture') === '360' ? { width: 640, height: 360 } : { width: 1280, height: 720 };

// Tell the server how large each remote video is drawn, so it sends the smallest layer that
// fills it (a thumbnail never pulls 720p).
const sizeObserver = new ResizeObserver((entries) => { for (const e of entries) reportSize(e.target); });

const state = {
  claims: null,
  me: null,            // ParticipantInfo
  room: null,          // RoomInfo
  participants: new Map(), // id -> ParticipantInfo
  tracks: new Map(),   // track id -> TrackView
  ws: null,
  sub: null,
  pub: null,
  local: null,         // MediaStream (camera + mic)
  live: false,         // we publish
  wantLive: false,     // the user asked to publish (restored after reconnects)
  leaving: false,
  ended: false,
  over: null,          // the session is over: what the connection indicator keeps saying ('Ended', 'Left', 'Offline')
  previewing: null,    // the camera request in flight (one at a time)
  reconnectDelay: 500,
  timer: null,
  remoteStreams: new Map(), // participant id -> MediaStream
  audioBlocked: false,
  firstFrameAt: null,
  joins: 0,           // successful joins (reconnects add one each)
  lastPong: Date.now(),
  reconnectTimer: null,
  layersMax: 2,        // dynacast: highest simulcast layer anybody wants of ours
  quality: 'auto',
  statsWaiters: [],
  sentSizes: new Map(), // track id -> height last reported
  studio: new Map(),    // studio feed participant id -> 'live' | 'reconnecting'
  streamKeys: [],
};

const isStudio = (p) => p?.identity?.startsWith('studio:');

function decodeClaims(t) {
  try {
    const b = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b + '='.repeat((4 - (b.length % 4)) % 4)));
  } catch { return null; }
}

function setConn(s, text) {
  $('conn').dataset.state = s;
  $('conn-text').textContent = text;
}

function banner(text) {
  const b = $('banner');
  b.hidden = !text;
  b.textContent = text || '';
}

// A passing notice: cleared after `ms` unless something else (the end of the live) replaced it.
function flash(text, ms) {
  if (state.over) return;
  banner(text);
  setTimeout(() => { if ($('banner').textContent === text && !state.over) banner(''); }, ms);
}

// ---------------------------------------------------------------- lobby (dev mode only)

async function showLobby() {
  $('lobby').hidden = false;
  $('conn').hidden = true;
  $('lobby-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const room = $('lobby-room').value.trim();
    const name = $('lobby-name').value.trim();
    const role = $('lobby-role').value;
    const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${Math.random().toString(36).slice(2, 7)}`;
    const q = new URLSearchParams({ room, identity, name, role });
    const r = await fetch(`/api/dev/token?${q}`);
    if (!r.ok) {
      $('lobby-note').textContent = r.status === 404
        ? 'This server is not in dev mode: ask your host for a link with a token.'
        : `Could not get a token (${r.status}).`;
      return;
    }
    const { token: t } = await r.json();
    location.search = `?token=${encodeURIComponent(t)}`;
  });
}

// ---------------------------------------------------------------- signaling

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

function connect() {
  clearTimeout(state.reconnectTimer);
  setConn(state.me ? 'reconnecting' : 'connecting', state.me ? 'Reconnecting…' : 'Connecting…');
  const old = state.ws;
  const ws = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  state.ws = ws;
  if (old && old.readyState <= WebSocket.OPEN) old.close(); // never two sessions at once
  ws.onopen = () => send({ type: 'join', token, protocol: 1 });
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    handle(msg).catch((e) => console.error('handling', msg.type, e));
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    teardownPeers();
    // The close that follows room_ended or a leave must not turn "Ended" / "Left" into "Offline".
    if (state.leaving || state.ended) { setConn('offline', state.over || 'Offline'); return; }
    setConn('reconnecting', 'Reconnecting…');
    const delay = state.reconnectDelay;
    state.reconnectDelay = Math.min(delay * 2, 5000);
    state.reconnectTimer = setTimeout(connect, delay);
  };
}

async function handle(msg) {
  switch (msg.type) {
    case 'joined': {
      state.reconnectDelay = 500;
      state.joins += 1;
      state.lastPong = Date.now();
      state.me = msg.participant;
      state.room = msg.room;
      state.participants = new Map(msg.participants.map((p) => [p.id, p]));
      state.participants.set(msg.participant.id, msg.participant);
      state.tracks = new Map(msg.tracks.map((t) => [t.id, t]));
      state.remoteStreams.clear();
      setConn('live', 'Connected');
      banner('');
      state.sentSizes.clear();
      state.layersMax = 2;
      renderRoom();
      if (state.quality !== 'auto') send({ type: 'quality', quality: state.quality });
      if (state.wantLive) await goLive();
      break;
    }
    case 'offer': await onOffer(msg.sdp); break;
    case 'answer':
      if (state.pub) await state.pub.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      break;
    case 'candidate': {
      const pc = msg.target === 'publisher' ? state.pub : state.sub;
      if (pc) pc.addIceCandidate(msg.candidate).catch(() => {});
      break;
    }
    case 'participant_joined': state.participants.set(msg.participant.id, msg.participant); renderStage(); break;
    case 'participant_left':
      state.participants.delete(msg.participant);
      state.remoteStreams.delete(msg.participant);
      state.studio.delete(msg.participant);
      // Whatever its tracks did, nobody who left keeps a tile.
      for (const [id, t] of state.tracks) if (t.participant === msg.participant) state.tracks.delete(id);
      renderStage();
      break;
    case 'track_published': state.tracks.set(msg.track.id, msg.track); renderStage(); break;
    case 'track_unpublished': {
      state.tracks.delete(msg.track);
      renderStage();
      break;
    }
    case 'track_muted': {
      const t = state.tracks.get(msg.track);
      if (t) { t.muted = msg.muted; renderStage(); }
      break;
    }
    case 'room_update': state.room = msg.room; renderHeader(); renderStage(); break; // seats may have freed
    case 'pong': state.lastPong = Date.now(); break;
    case 'layers': state.layersMax = msg.max_layer; await applyLayers(); break;
    case 'stats': { const r = state.statsWaiters.shift(); if (r) r(msg); break; }
    case 'stream_key':
      $('studio-new').hidden = false;
      $('studio-url').value = msg.server_url;
      $('studio-key').value = msg.key;
      send({ type: 'list_stream_keys' });
      break;
    case 'stream_keys': state.streamKeys = msg.keys; renderKeys(); break;
    case 'stream_key_revoked': send({ type: 'list_stream_keys' }); break;
    case 'studio_state':
      if (msg.state === 'ended') state.studio.delete(msg.participant); else state.studio.set(msg.participant, msg.state);
      renderStage();
      break;
    case 'studio_notice':
      flash(`Studio feed: ${msg.message}`, 12_000);
      break;
    case 'connection_state':
      if ((msg.state === 'failed' || msg.state === 'closed') && !state.leaving) restart('media connection lost');
      break;
    case 'room_ended':
      state.ended = true;
      finish('Ended', `The live has ended${msg.reason && msg.reason !== 'the host ended the live' ? ` (${msg.reason})` : ''}.`);
      break;
    case 'error':
      console.warn('server error', msg.code, msg.message);
      if (msg.code.startsWith('token_') || msg.code === 'room_ended') {
        state.ended = true;
        finish(msg.code === 'room_ended' ? 'Ended' : 'Offline',
          msg.code === 'room_ended' ? 'The live has ended.' : `Cannot join: ${msg.message}`);
      } else if (msg.code === 'stage_full' || msg.code === 'room_not_live' || msg.code === 'not_allowed') {
        state.wantLive = false;
        state.live = false;
        if (state.pub) { state.pub.close(); state.pub = null; }
        flash(msg.message, 4000);
        renderControls();
        renderStage(); // no seat after all: our camera goes back to the preview below the stage
      }
      break;
    default: break;
  }
}

// Full restart of both connections through a fresh WebSocket session.
function restart(why) {
  console.info('restarting:', why);
  const ws = state.ws;
  if (ws && ws.readyState <= WebSocket.OPEN) {
    ws.close(); // onclose tears the peers down and schedules the reconnect
  } else {
    teardownPeers();
    connect();
  }
}

function teardownPeers() {
  if (state.sub) { state.sub.close(); state.sub = null; }
  if (state.pub) { state.pub.close(); state.pub = null; }
  state.live = false;
}

// ---------------------------------------------------------------- subscribing

function ensureSub() {
  if (state.sub) return state.sub;
  const pc = new RTCPeerConnection();
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', target: 'subscriber', candidate: e.candidate.toJSON() }); };
  pc.ontrack = (e) => {
    const stream = e.streams[0];
    if (!stream) return;
    state.remoteStreams.set(stream.id, stream);
    stream.onremovetrack = () => renderStage();
    renderStage();
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') restart('subscriber connection failed');
  };
  state.sub = pc;
  return pc;
}

async function onOffer(sdp) {
  const pc = ensureSub();
  await pc.setRemoteDescription({ type: 'offer', sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
}

// ---------------------------------------------------------------- publishing

function startPreview() {
  if (state.local) return Promise.resolve(state.local);
  // One camera request at a time (the page-open preview and an early "Go live" share it), and
  // none that outlives the session: a live that ended meanwhile gets its camera turned off again.
  state.previewing ??= (async () => {
    try {
      const cam = $('pick-cam').value || undefined;
      const mic = $('pick-mic').value || undefined;
      const stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: CAPTURE.width }, height: { ideal: CAPTURE.height }, frameRate: { ideal: 24 }, deviceId: cam ? { exact: cam } : undefined },
        audio: { deviceId: mic ? { exact: mic } : undefined },
      });
      if (state.over) {
        stream.getTracks().forEach((t) => t.stop());
        throw new Error('the session is over');
      }
      state.local = stream;
      await fillDevicePickers();
      renderStage();
      renderControls();
      return stream;
    } finally {
      state.previewing = null;
    }
  })();
  return state.previewing;
}

async function fillDevicePickers() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [sel, kind, track] of [['pick-cam', 'videoinput', 'video'], ['pick-mic', 'audioinput', 'audio']]) {
    const el = $(sel);
    const current = state.local?.getTracks().find((t) => t.kind === track)?.getSettings().deviceId;
    el.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const o = document.createElement('option');
      o.value = d.deviceId;
      o.textContent = d.label || `${track === 'video' ? 'Camera' : 'Microphone'} ${i + 1}`;
      o.selected = d.deviceId === current;
      return o;
    }));
  }
}

async function switchDevice(kind) {
  if (!state.local) return;
  const id = $(kind === 'video' ? 'pick-cam' : 'pick-mic').value;
  const fresh = await navigator.mediaDevices.getUserMedia(kind === 'video'
    ? { video: { deviceId: { exact: id }, width: { ideal: CAPTURE.width }, height: { ideal: CAPTURE.height } } }
    : { audio: { deviceId: { exact: id } } });
  const track = fresh.getTracks()[0];
  const old = state.local.getTracks().find((t) => t.kind === kind);
  if (old) { track.enabled = old.enabled; state.local.removeTrack(old); old.stop(); }
  state.local.addTrack(track);
  const sender = state.pub?.getSenders().find((s) => s.track?.kind === kind || (!s.track && kind === 'video'));
  if (sender) await sender.replaceTrack(track);
  renderStage();
}

async function goLive() {
  if (state.over) return;
  state.wantLive = true;
  const stream = await startPreview();
  if (state.pub || state.over) return;
  const pc = new RTCPeerConnection();
  state.pub = pc;
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', target: 'publisher', candidate: e.candidate.toJSON() }); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') restart('publisher connection failed');
  };
  const video = stream.getVideoTracks()[0];
  const audio = stream.getAudioTracks()[0];
  if (audio) pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });
  if (video) {
    try {
      pc.addTransceiver(video, { direction: 'sendonly', streams: [stream], sendEncodings: SIMULCAST });
    } catch {
      pc.addTransceiver(video, { direction: 'sendonly', streams: [stream] });
    }
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send({ type: 'publish', sdp: pc.localDescription.sdp });
  state.live = true;
  renderControls();
}

// Dynacast: pause the simulcast layers nobody watches, resume them when someone does.
async function applyLayers() {
  const sender = state.pub?.getSenders().find((x) => x.track?.kind === 'video');
  if (!sender) return;
  const p = sender.getParameters();
  if (!p.encodings || p.encodings.length < 2) return;
  let changed = false;
  for (const e of p.encodings) {
    const idx = SIMULCAST.findIndex((x) => x.rid === e.rid);
    const active = idx < 0 || idx <= state.layersMax;
    if (e.active !== active) { e.active = active; changed = true; }
  }
  if (changed) await sender.setParameters(p).catch((err) => console.warn('setParameters', err));
}

function stopLocal() {
  if (state.local) { state.local.getTracks().forEach((t) => t.stop()); state.local = null; }
  teardownPeers();
  renderStage();
}

// The session is over for good (the live ended, we left, or the join was refused): stop the camera,
// clear the stage and the LIVE timer, keep the connection indicator on `connText`, and leave only
// the controls that still do something.
function finish(connText, message) {
  state.over = connText;
  state.wantLive = false;
  clearInterval(state.timer);
  state.timer = null;
  if (state.room && connText === 'Ended') state.room = { ...state.room, state: 'ended' };
  state.tracks.clear();
  state.remoteStreams.clear();
  state.studio.clear();
  $('unmute').hidden = true;
  stopLocal(); // closes both peer connections and renders the (now empty) stage
  banner(message);
  setConn('offline', connText);
  renderHeader();
  renderControls();
}

function myTrack(kind) {
  for (const t of state.tracks.values()) if (t.participant === state.me?.id && t.kind === kind) return t;
  return null;
}

function toggle(kind) {
  if (!state.local) return;
  const track = state.local.getTracks().find((t) => t.kind === kind);
  if (!track) return;
  track.enabled = !track.enabled;
  const server = myTrack(kind);
  if (server) send({ type: 'mute', track: server.id, muted: !track.enabled });
  renderControls();
  renderStage();
}

// ---------------------------------------------------------------- rendering

// All seats are taken by others (we hold none: a seat is ours once we publish).
function seatsFull() {
  const r = state.room;
  if (!r || state.live) return false;
  return r.publishers >= (r.max_publishers || 4);
}

function onStage() {
  // Publishers with at least one track, plus ourselves while we publish.
  const ids = [];
  for (const t of state.tracks.values()) if (!ids.includes(t.participant)) ids.push(t.participant);
  // Our own camera shows as soon as the preview runs (publishers see themselves before going
  // live) if a seat is free for it; if not, it shows below the stage (renderSelfPreview).
  if (state.local && state.me && !ids.includes(state.me.id) && ids.length < 4 && !seatsFull()) ids.push(state.me.id);
  return ids.slice(0, 4);
}

// A publisher whose camera runs but who has no place on a full stage still sees their camera,
// with a note that says why it is not on stage.
function renderSelfPreview(ids) {
  const box = $('self-preview');
  const v = $('self-video');
  const show = !!(state.local && state.me && !ids.includes(state.me.id));
  box.hidden = !show;
  if (!show) { if (v.srcObject) v.srcObject = null; return; }
  if (v.srcObject !== state.local) v.srcObject = state.local;
  const cam = state.local.getVideoTracks()[0];
  const tile = box.querySelector('.tile');
  tile.classList.toggle('cam-off', !cam?.enabled);
  tile.dataset.initials = initials(state.me.name);
  const r = state.room;
  const max = r?.max_publishers || 4;
  $('self-note').textContent = `The stage is full (${Math.max(r?.publishers ?? max, ids.length)} of ${max}). `
    + `Only you see this preview; press “${$('go-live').textContent}” when a seat frees up.`;
}

function initials(name) {
  return (name || '?').split(/\s+/).map((w) => w[0]).join('').slice(0, 2).toUpperCase();
}

function renderStage() {
  const stage = $('stage');
  const ids = onStage();
  stage.dataset.count = String(ids.length);
  const keep = new Set(ids);
  for (const tile of stage.querySelectorAll('.tile')) if (!keep.has(tile.dataset.participant)) tile.remove();
  for (const id of ids) {
    let tile = stage.querySelector(`[data-participant="${CSS.escape(id)}"]`);
    const p = state.participants.get(id);
    const mine = id === state.me?.id;
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
    const stream = mine ? state.local : state.remoteStreams.get(id);
    if (stream && v.srcObject !== stream) v.srcObject = stream;
    const tracks = [...state.tracks.values()].filter((t) => t.participant === id);
    const camOff = mine ? !state.local?.getVideoTracks()[0]?.enabled : tracks.some((t) => t.kind === 'video' && t.muted);
    const micOff = mine ? !state.local?.getAudioTracks()[0]?.enabled : tracks.some((t) => t.kind === 'audio' && t.muted);
    tile.classList.toggle('cam-off', !!camOff);
    tile.dataset.initials = initials(p?.name);
    const label = tile.querySelector('.name');
    label.textContent = `${p?.name ?? 'Guest'}${mine ? ' (you)' : ''}${p?.role === 'host' ? ' · host' : ''}${isStudio(p) ? ' · studio' : ''}`;
    tile.classList.toggle('studio', isStudio(p));
    tile.classList.toggle('reconnecting', state.studio.get(id) === 'reconnecting');
    if (micOff) { const f = document.createElement('span'); f.className = 'flag'; f.textContent = 'mic off'; label.append(f); }
    if (camOff) { const f = document.createElement('span'); f.className = 'flag'; f.textContent = 'cam off'; label.append(f); }
    if (!mine) { attachAudio(id, stream); reportSize(v); }
  }
  for (const el of document.querySelectorAll('audio[data-participant]')) {
    if (!keep.has(el.dataset.participant) || el.dataset.participant === state.me?.id) el.remove();
  }
  renderSelfPreview(ids);
}

function reportSize(video) {
  const id = video.closest('.tile')?.dataset.participant;
  const track = [...state.tracks.values()].find((t) => t.participant === id && t.kind === 'video');
  if (!track) return;
  const r = video.getBoundingClientRect();
  const height = Math.round(r.height * (window.devicePixelRatio || 1));
  const width = Math.round(r.width * (window.devicePixelRatio || 1));
  if (state.sentSizes.get(track.id) === height) return;
  state.sentSizes.set(track.id, height);
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
    el.play().catch(() => { state.audioBlocked = true; $('unmute').hidden = false; });
  }
}

function noteFirstFrame(video) {
  if (state.firstFrameAt !== null) return;
  const mark = () => { if (state.firstFrameAt === null) state.firstFrameAt = performance.now(); };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(mark); else mark();
}

function renderHeader() {
  const r = state.room;
  if (!r) return;
  $('room-name').textContent = r.name;
  // Once the live has ended (or we left) nothing here is current any more: no LIVE, no count.
  const over = !!state.over || r.state === 'ended';
  $('live-badge').hidden = over || r.state !== 'live';
  $('waiting-badge').hidden = over || r.state !== 'waiting';
  $('viewer-count').hidden = over;
  $('viewer-count').textContent = `${r.viewers} watching`;
  clearInterval(state.timer);
  state.timer = null;
  if (!over && r.state === 'live' && r.started_at) {
    const tick = () => {
      const s = Math.max(0, Math.floor((Date.now() - r.started_at) / 1000));
      const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
      $('live-timer').textContent = `${h ? h + ':' + String(m).padStart(2, '0') : m}:${String(sec).padStart(2, '0')}`;
    };
    tick();
    state.timer = setInterval(tick, 1000);
  }
}

function renderControls() {
  const role = state.me?.role ?? state.claims?.role;
  const canPublish = role === 'host' || role === 'cohost';
  const over = !!state.over;
  // After the end only "Join again" (after a leave) is left to press.
  $('controls').hidden = over && state.over !== 'Left';
  $('publish-controls').hidden = !canPublish || over;
  $('end-live').hidden = role !== 'host' || over;
  $('studio').hidden = role !== 'host' || over;
  $('leave').hidden = over;
  $('quality').closest('label').hidden = over;
  $('rejoin').hidden = state.over !== 'Left';
  const go = $('go-live');
  go.textContent = role === 'host' ? 'Go live' : 'Join as co-host';
  go.hidden = state.live;
  const mic = state.local?.getAudioTracks()[0];
  const cam = state.local?.getVideoTracks()[0];
  const micOff = mic ? !mic.enabled : false;
  const camOff = cam ? !cam.enabled : false;
  $('toggle-mic').textContent = micOff ? 'Mic off' : 'Mic on';
  $('toggle-mic').setAttribute('aria-pressed', String(micOff));
  $('toggle-mic').setAttribute('aria-label', micOff ? 'Unmute microphone' : 'Mute microphone');
  $('toggle-cam').textContent = camOff ? 'Camera off' : 'Camera on';
  $('toggle-cam').setAttribute('aria-pressed', String(camOff));
  $('toggle-cam').setAttribute('aria-label', camOff ? 'Turn camera on' : 'Turn camera off');
}

function renderKeys() {
  const list = $('studio-keys');
  list.replaceChildren();
  for (const k of state.streamKeys) {
    const li = document.createElement('li');
    li.textContent = `${k.label} · ${k.id}${k.revoked_at ? ' · revoked' : ''}`;
    if (!k.revoked_at) {
      const b = document.createElement('button');
      b.textContent = 'Revoke';
      b.addEventListener('click', () => send({ type: 'revoke_stream_key', id: k.id }));
      li.append(b);
    }
    list.append(li);
  }
}

function renderRoom() {
  $('room').hidden = false;
  renderHeader();
  renderControls();
  renderStage();
}

// ---------------------------------------------------------------- wiring

function wire() {
  $('go-live').addEventListener('click', () => goLive().catch((e) => { if (!state.over) banner(`Could not start camera: ${e.message}`); }));
  $('toggle-mic').addEventListener('click', () => toggle('audio'));
  $('toggle-cam').addEventListener('click', () => toggle('video'));
  $('pick-cam').addEventListener('change', () => switchDevice('video'));
  $('pick-mic').addEventListener('change', () => switchDevice('audio'));
  $('leave').addEventListener('click', () => {
    state.leaving = true;
    send({ type: 'leave' });
    finish('Left', 'You left the room.');
  });
  $('rejoin').addEventListener('click', () => location.reload());
  $('end-live').addEventListener('click', () => send({ type: 'end_room' }));
  $('studio').addEventListener('click', () => {
    $('studio-new').hidden = true;
    $('studio-key').value = '';
    send({ type: 'list_stream_keys' });
    $('studio-dialog').showModal();
  });
  $('studio-create').addEventListener('click', () => send({ type: 'create_stream_key', label: $('studio-label').value.trim() }));
  $('studio-close').addEventListener('click', () => $('studio-dialog').close());
  $('quality').addEventListener('change', () => {
    state.quality = $('quality').value;
    send({ type: 'quality', quality: state.quality });
  });
  $('unmute').addEventListener('click', () => {
    for (const el of document.querySelectorAll('audio[data-participant]')) el.play().catch(() => {});
    state.audioBlocked = false;
    $('unmute').hidden = true;
  });
  // Keepalive and silent-drop detection: a ping every 5 s; no pong for 12 s means the path is
  // gone even if the socket still looks open, so start over.
  setInterval(() => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN || state.leaving || state.ended) return;
    if (Date.now() - state.lastPong > 12_000) { restart('no pong'); return; }
    send({ type: 'ping', ts: Date.now() });
  }, 5_000);
  // The browser knows when the network goes and comes back (Wi-Fi to cellular, a tunnel).
  window.addEventListener('offline', () => {
    if (state.leaving || state.ended) return;
    setConn('reconnecting', 'Offline');
    restart('browser went offline');
  });
  window.addEventListener('online', () => {
    if (state.leaving || state.ended) return;
    state.reconnectDelay = 500;
    restart('browser back online');
  });
}

// A small hook for tests and debugging: inbound media as getStats() sees it.
window.__onair = {
  state,
  async inbound() {
    if (!state.sub) return [];
    const out = [];
    const report = await state.sub.getStats();
    report.forEach((r) => {
      if (r.type === 'inbound-rtp') {
        out.push({ kind: r.kind, framesDecoded: r.framesDecoded ?? 0, packetsReceived: r.packetsReceived ?? 0,
          frameHeight: r.frameHeight ?? 0, totalSamplesReceived: r.totalSamplesReceived ?? 0,
          mimeType: report.get(r.codecId)?.mimeType ?? '', totalAudioEnergy: r.totalAudioEnergy ?? 0,
          freezeCount: r.freezeCount ?? 0, framesDropped: r.framesDropped ?? 0,
          jitterBufferDelay: r.jitterBufferDelay ?? 0, jitterBufferEmittedCount: r.jitterBufferEmittedCount ?? 0 });
      }
    });
    return out;
  },
  tiles() { return [...document.querySelectorAll('#stage .tile')].map((t) => t.querySelector('.name').textContent); },
  firstFrameAt() { return state.firstFrameAt; },
  serverStats() {
    return new Promise((resolve) => { state.statsWaiters.push(resolve); send({ type: 'get_stats' }); });
  },
  async outbound() {
    if (!state.pub) return [];
    const out = [];
    (await state.pub.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') out.push({ rid: r.rid, bytesSent: r.bytesSent, frameHeight: r.frameHeight ?? 0 });
    });
    return out;
  },
  joins() { return state.joins; },
  connText() { return document.getElementById('conn-text').textContent; },
};

if (!token) {
  showLobby();
} else {
  state.claims = decodeClaims(token);
  $('room-name').textContent = state.claims?.room ?? '';
  wire();
  renderControls();
  $('room').hidden = false;
  if (state.claims?.role === 'host' || state.claims?.role === 'cohost') {
    startPreview().catch((e) => { if (!state.over) banner(`Camera or microphone unavailable: ${e.message}`); });
  }
  connect();
}
