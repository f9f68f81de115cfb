// The publisher side: our camera and microphone, the preview, and the peer connection that sends
// them (we offer, the server answers).

import { closePeers, publisher, room, session, stageMoves, stopPublishing } from './state.js';
import { $, banner, flash, renderControls, sentence } from './ui.js';
import { handlers, restart, send } from './signal.js';
import { renderStage } from './stage.js';

// Simulcast layers (LiveKit's rid names, which the SFU understands): quarter, half, full. The
// live's profile sets them (joined.profile.layers); this ladder is for a server that sends none.
const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];
const RIDS = ['q', 'h', 'f']; // the layer numbers of `layers.max_layer`

// Our simulcast encodings: the profile's layers (lowest first), else the ladder above.
export function encodings() {
  const layers = room.profile?.layers;
  if (!layers?.length) return SIMULCAST;
  return layers.map((l) => ({ rid: l.rid, scaleResolutionDownBy: l.scale_resolution_down_by,
    maxBitrate: l.max_bitrate_kbps * 1000, maxFramerate: l.max_framerate }));
}

// Capture size: 720p by default (three simulcast layers: 180p, 360p, 720p). `?capture=360` asks
// for 640x360 (browsers then send two layers), for weak machines and tests.
const CAPTURE = new URLSearchParams(location.search).get('capture') === '360' ? { width: 640, height: 360 } : { width: 1280, height: 720 };

export function startPreview() {
  if (publisher.local) return Promise.resolve(publisher.local);
  // One camera request at a time (the page-open preview and an early "Go live" share it), and
  // none that outlives the session: a live that ended meanwhile gets its camera turned off again.
  publisher.previewing ??= (async () => {
    try {
      const cam = $('pick-cam').value || undefined;
      const mic = $('pick-mic').value || undefined;
      const stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: CAPTURE.width }, height: { ideal: CAPTURE.height }, frameRate: { ideal: 24 }, deviceId: cam ? { exact: cam } : undefined },
        audio: { deviceId: mic ? { exact: mic } : undefined },
      });
      if (session.over) {
        stream.getTracks().forEach((t) => t.stop());
        throw new Error('the session is over');
      }
      publisher.local = stream;
      await fillDevicePickers();
      renderStage();
      renderControls();
      return stream;
    } finally {
      publisher.previewing = null;
    }
  })();
  return publisher.previewing;
}

async function fillDevicePickers() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [sel, kind, track] of [['pick-cam', 'videoinput', 'video'], ['pick-mic', 'audioinput', 'audio']]) {
    const el = $(sel);
    const current = publisher.local?.getTracks().find((t) => t.kind === track)?.getSettings().deviceId;
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
  if (!publisher.local) return;
  const id = $(kind === 'video' ? 'pick-cam' : 'pick-mic').value;
  const fresh = await navigator.mediaDevices.getUserMedia(kind === 'video'
    ? { video: { deviceId: { exact: id }, width: { ideal: CAPTURE.width }, height: { ideal: CAPTURE.height } } }
    : { audio: { deviceId: { exact: id } } });
  const track = fresh.getTracks()[0];
  const old = publisher.local.getTracks().find((t) => t.kind === kind);
  if (old) { track.enabled = old.enabled; publisher.local.removeTrack(old); old.stop(); }
  publisher.local.addTrack(track);
  const sender = publisher.pc?.getSenders().find((s) => s.track?.kind === kind || (!s.track && kind === 'video'));
  if (sender) await sender.replaceTrack(track);
  renderStage();
}

export async function goLive() {
  if (session.over) return;
  publisher.wantLive = true;
  const stream = await startPreview();
  // Not joined on this connection yet (the button was pressed during the join or a reconnect):
  // `joined` publishes, as it does for every participant that wants to be live.
  if (publisher.pc || session.over || !session.ready) return;
  const pc = new RTCPeerConnection();
  publisher.pc = pc;
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', target: 'publisher', candidate: e.candidate.toJSON() }); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') restart('publisher connection failed');
  };
  const video = stream.getVideoTracks()[0];
  const audio = stream.getAudioTracks()[0];
  if (audio) pc.addTransceiver(audio, { direction: 'sendonly', streams: [stream] });
  if (video) {
    try {
      pc.addTransceiver(video, { direction: 'sendonly', streams: [stream], sendEncodings: encodings() });
    } catch {
      pc.addTransceiver(video, { direction: 'sendonly', streams: [stream] });
    }
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  send({ type: 'publish', sdp: pc.localDescription.sdp });
  publisher.live = true;
  renderControls();
}

// Dynacast: pause the simulcast layers nobody watches, resume them when someone does.
async function applyLayers() {
  const sender = publisher.pc?.getSenders().find((x) => x.track?.kind === 'video');
  if (!sender) return;
  const p = sender.getParameters();
  if (!p.encodings || p.encodings.length < 2) return;
  let changed = false;
  for (const e of p.encodings) {
    const idx = RIDS.indexOf(e.rid);
    const active = idx < 0 || idx <= publisher.layersMax;
    if (e.active !== active) { e.active = active; changed = true; }
  }
  if (changed) await sender.setParameters(p).catch((err) => console.warn('setParameters', err));
}

handlers.answer = async (msg) => {
  if (publisher.pc) await publisher.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
};

handlers.layers = async (msg) => {
  publisher.layersMax = msg.max_layer;
  await applyLayers();
};

export function stopLocal() {
  if (publisher.local) { publisher.local.getTracks().forEach((t) => t.stop()); publisher.local = null; }
  closePeers();
  renderStage();
}

function myTrack(kind) {
  for (const t of room.tracks.values()) if (t.participant === session.me?.id && t.kind === kind) return t;
  return null;
}

function toggle(kind) {
  if (!publisher.local) return;
  const track = publisher.local.getTracks().find((t) => t.kind === kind);
  if (!track) return;
  track.enabled = !track.enabled;
  const server = myTrack(kind);
  if (server) send({ type: 'mute', track: server.id, muted: !track.enabled });
  renderControls();
  renderStage();
}

// Onto the stage without a co-host token (docs/protocol.md §6.1): our request, the host's
// invitation, the seat (we go live in place, on this socket) and the way off it.
handlers.stage_request = (msg) => {
  stageMoves.request = msg.state === 'pending' || msg.state === 'declined' ? { state: msg.state, position: msg.position } : null;
  renderControls();
};

handlers.stage_invite = (msg) => {
  stageMoves.invite = msg.from;
  $('invite-title').textContent = `${msg.from?.name ?? 'The host'} invites you on stage`;
  if (!$('invite-dialog').open) $('invite-dialog').showModal();
};

function answerInvite(accept) {
  send({ type: 'answer_stage_invite', accept });
  stageMoves.invite = null;
  $('invite-dialog').close();
}

// A seat is ours (participant_updated has made us a co-host): camera and mic, then publish.
handlers.stage_granted = async () => {
  stageMoves.granted = true;
  stageMoves.request = null;
  stageMoves.invite = null;
  if ($('invite-dialog').open) $('invite-dialog').close();
  renderControls();
  try {
    await goLive();
  } catch (e) {
    // No camera: give the seat back rather than hold it empty.
    if (!session.over) banner(`Could not start camera: ${e.message}`);
    send({ type: 'step_down' });
  }
};

// Off stage (the host took us off, or we stepped down): the publisher connection and the camera
// stop, we keep watching.
handlers.removed_from_stage = (msg) => {
  stopPublishing();
  renderStage();
  renderControls();
  flash(msg.by_host ? 'The host took you off stage. You are watching again.' : 'You left the stage. You are watching again.', 6000);
};

// A refused stage move of ours (a request, an answer to an invitation, stepping down).
export function ownStageError(msg) {
  if (!['request_stage', 'cancel_stage_request', 'answer_stage_invite', 'step_down'].includes(msg.request)) return false;
  if (msg.request === 'answer_stage_invite' && msg.code === 'stage_full') flash('The stage filled up before you answered.', 6000);
  else flash(sentence(msg.message), 6000);
  if (msg.request === 'cancel_stage_request' || msg.request === 'request_stage') stageMoves.request = null;
  renderControls();
  return true;
}

export function wirePublishing() {
  $('ask-stage').addEventListener('click', () => send({ type: 'request_stage' }));
  $('cancel-request').addEventListener('click', () => send({ type: 'cancel_stage_request' }));
  $('step-down').addEventListener('click', () => send({ type: 'step_down' }));
  $('invite-accept').addEventListener('click', () => answerInvite(true));
  $('invite-decline').addEventListener('click', () => answerInvite(false));
  $('invite-dialog').addEventListener('cancel', (e) => { e.preventDefault(); answerInvite(false); });
  $('go-live').addEventListener('click', () => goLive().catch((e) => { if (!session.over) banner(`Could not start camera: ${e.message}`); }));
  $('toggle-mic').addEventListener('click', () => toggle('audio'));
  $('toggle-cam').addEventListener('click', () => toggle('video'));
  $('pick-cam').addEventListener('change', () => switchDevice('video'));
  $('pick-mic').addEventListener('change', () => switchDevice('audio'));
}
