// Onair browser client: co-hosts go live, viewers watch. Plain ES modules, no build step.
// Protocol: docs/protocol.md. Two peer connections: `pub` (we offer our camera and mic) and
// `sub` (the server offers everyone else's tracks).

import { state, token } from './state.js';
import { $, banner, renderControls } from './ui.js';
import { connect, keepAlive, send } from './signal.js';
import { goLive, startPreview, switchDevice, toggle } from './publish.js';
import { finish } from './session.js';

function decodeClaims(t) {
  try {
    const b = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b + '='.repeat((4 - (b.length % 4)) % 4)));
  } catch { return null; }
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
  keepAlive();
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
