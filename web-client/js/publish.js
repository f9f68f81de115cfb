// The publisher side: our camera and microphone, the preview, and the peer connection that sends
// them (we offer, the server answers).

import { state } from './state.js';
import { $, renderControls } from './ui.js';
import { restart, send, teardownPeers } from './signal.js';
import { renderStage } from './stage.js';

// Simulcast layers (LiveKit's rid names, which the SFU understands): quarter, half, full.
export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

// Capture size: 720p by default (three simulcast layers: 180p, 360p, 720p). `?capture=360` asks
// for 640x360 (browsers then send two layers), for weak machines and tests.
const CAPTURE = new URLSearchParams(location.search).get('capture') === '360' ? { width: 640, height: 360 } : { width: 1280, height: 720 };

export function startPreview() {
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

export async function switchDevice(kind) {
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

export async function goLive() {
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
export async function applyLayers() {
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

export function stopLocal() {
  if (state.local) { state.local.getTracks().forEach((t) => t.stop()); state.local = null; }
  teardownPeers();
  renderStage();
}

function myTrack(kind) {
  for (const t of state.tracks.values()) if (t.participant === state.me?.id && t.kind === kind) return t;
  return null;
}

export function toggle(kind) {
  if (!state.local) return;
  const track = state.local.getTracks().find((t) => t.kind === kind);
  if (!track) return;
  track.enabled = !track.enabled;
  const server = myTrack(kind);
  if (server) send({ type: 'mute', track: server.id, muted: !track.enabled });
  renderControls();
  renderStage();
}
