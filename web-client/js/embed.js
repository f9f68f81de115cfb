// The embed player (/embed/{room}?v=1, docs/whip-whep.md §3): the room's stage over WHEP, muted
// until a tap, with a LIVE badge while a seat plays. No WebSocket, no chat.
//
// It offers one receive-only audio and one video m-line per stage seat (the stage holds four);
// the server fills them in stage order and moves them as the stage changes, so a seat's tile
// shows whoever holds that seat. A tile shows while its video decodes.

const SEATS = 4;
const CHECK_MS = 500;
// A tile whose video decoded nothing for this long is hidden (its seat is empty).
const STALE_MS = 1500;
// Reconnect after the connection stays down this long; at most this many times in a row.
const DOWN_MS = 4000;
const MAX_RETRIES = 20;

const $ = (id) => document.getElementById(id);
const room = decodeURIComponent(location.pathname.split('/')[2] || '');
const token = new URLSearchParams(location.hash.slice(1)).get('token');

const state = { pc: null, resource: null, tiles: [], muted: true, live: false, retries: 0, downSince: null, error: null, connected: 0 };

function status(text) {
  $('status').textContent = text;
  $('status').hidden = !text;
}

function makeTiles(pc) {
  const transceivers = pc.getTransceivers();
  const grid = $('grid');
  grid.replaceChildren();
  state.tiles = [];
  for (let i = 0; i < SEATS; i += 1) {
    const audio = transceivers[2 * i];
    const video = transceivers[2 * i + 1];
    const el = document.createElement('video');
    el.autoplay = true;
    el.playsInline = true;
    el.muted = state.muted;
    const tile = document.createElement('div');
    tile.className = 'tile';
    tile.hidden = true;
    tile.append(el);
    grid.append(tile);
    // The stream is attached once the seat has decoded a frame (`check`): a video element
    // waiting for its first frame holds the page's load event, and an empty seat never sends one.
    const stream = new MediaStream([video.receiver.track, audio.receiver.track]);
    state.tiles.push({ tile, el, video, stream, frames: 0, lastFrameAt: 0 });
  }
}

// Wait until the browser has its candidates (host candidates come at once), at most 1 s: the
// offer then carries them, and no trickle is needed.
function gathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, 1000);
  });
}

async function connect() {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  for (let i = 0; i < SEATS; i += 1) {
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addTransceiver('video', { direction: 'recvonly' });
  }
  state.pc = pc;
  makeTiles(pc);
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'connected') {
      state.connected += 1;
      state.retries = 0;
      state.downSince = null;
    } else if (['disconnected', 'failed'].includes(pc.connectionState)) {
      state.downSince ??= performance.now();
    }
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`/whep/${encodeURIComponent(room)}`, { method: 'POST', headers, body: pc.localDescription.sdp });
  if (res.status !== 201) {
    const why = (await res.text()).replace(/^[a-z_]+: /, '');
    throw Object.assign(new Error(why || `refused (${res.status})`), { status: res.status });
  }
  state.resource = res.headers.get('location');
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
}

function leave() {
  if (!state.resource) return;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  fetch(state.resource, { method: 'DELETE', headers, keepalive: true }).catch(() => {});
  state.resource = null;
}

async function start() {
  try {
    status('Connecting…');
    await connect();
    state.error = null;
  } catch (e) {
    state.error = e.message;
    state.pc?.close();
    state.pc = null;
    // A room that is not live (yet) or a refused token: say so; the first is tried again.
    status(e.status === 404 ? 'This live has not started yet' : `Cannot play: ${e.message}`);
    if (e.status === 404 || e.status === 503 || e.status === undefined) state.downSince = performance.now();
  }
}

async function check() {
  const pc = state.pc;
  const now = performance.now();
  let playing = 0;
  if (pc) {
    const stats = await pc.getStats();
    const byMid = new Map();
    stats.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') byMid.set(r.mid, r.framesDecoded || 0); });
    for (const t of state.tiles) {
      const frames = byMid.get(t.video.mid) ?? 0;
      if (frames > t.frames) t.lastFrameAt = now;
      if (frames > 0 && t.el.srcObject !== t.stream) t.el.srcObject = t.stream;
      t.frames = frames;
      t.tile.hidden = now - t.lastFrameAt > STALE_MS || t.lastFrameAt === 0;
      if (!t.tile.hidden) playing += 1;
    }
  }
  $('grid').dataset.n = String(playing);
  state.live = playing > 0;
  $('live').hidden = !state.live;
  $('unmute').hidden = !state.live || !state.muted;
  if (state.live) status('');
  else if (pc && pc.connectionState === 'connected') status('Waiting for the live…');
  // Down for too long (or refused as not live yet): a new session.
  if (state.downSince !== null && now - state.downSince > DOWN_MS && state.retries < MAX_RETRIES) {
    state.retries += 1;
    state.downSince = null;
    leave();
    state.pc?.close();
    state.pc = null;
    status('Reconnecting…');
    await start();
  }
}

$('unmute').addEventListener('click', () => {
  state.muted = false;
  for (const t of state.tiles) {
    t.el.muted = false;
    t.el.play().catch(() => {});
  }
  $('unmute').hidden = true;
});
window.addEventListener('pagehide', leave);

// What tests read: the tiles shown and their frames, the LIVE badge, the mute state.
window.__embed = {
  state: () => ({ live: state.live, muted: state.muted, connected: state.connected, error: state.error,
    conn: state.pc?.connectionState ?? null, resource: state.resource }),
  tiles: () => state.tiles.filter((t) => !t.tile.hidden).map((t) => ({ mid: t.video.mid, frames: t.frames,
    width: t.el.videoWidth, height: t.el.videoHeight, muted: t.el.muted })),
};

if (!room) {
  status('No room in the address');
} else {
  await start();
  setInterval(() => { check().catch(() => {}); }, CHECK_MS);
}
