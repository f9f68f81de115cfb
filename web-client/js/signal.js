// The signaling WebSocket: connect and join, send, and start over when the socket or the path
// to the server goes away.

import { state, token } from './state.js';
import { $, banner, flash, renderControls, renderHeader, setConn } from './ui.js';
import { onOffer } from './subscribe.js';
import { applyLayers, goLive } from './publish.js';
import { renderStage } from './stage.js';
import { renderKeys } from './studio.js';
import { finish, renderRoom } from './session.js';

export function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}

export function connect() {
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
export function restart(why) {
  console.info('restarting:', why);
  const ws = state.ws;
  if (ws && ws.readyState <= WebSocket.OPEN) {
    ws.close(); // onclose tears the peers down and schedules the reconnect
  } else {
    teardownPeers();
    connect();
  }
}

export function teardownPeers() {
  if (state.sub) { state.sub.close(); state.sub = null; }
  if (state.pub) { state.pub.close(); state.pub = null; }
  state.live = false;
}

export function keepAlive() {
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
