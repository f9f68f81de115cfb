// The subscriber side: the server offers everyone else's tracks on one peer connection and we
// answer. Also the viewer's quality cap, the profile's playout delay, and the audio-only notice.

import { notices, publisher, room, subscriber } from './state.js';
import { $, renderHeader, renderNotices } from './ui.js';
import { handlers, restart, send } from './signal.js';
import { renderStage } from './stage.js';

function ensureSub() {
  if (subscriber.pc) return subscriber.pc;
  const pc = new RTCPeerConnection();
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', target: 'subscriber', candidate: e.candidate.toJSON() }); };
  pc.ontrack = (e) => {
    aimJitterBuffer(e.receiver);
    const stream = e.streams[0];
    if (!stream) return;
    subscriber.streams.set(stream.id, stream);
    stream.onremovetrack = () => renderStage();
    renderStage();
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed') restart('subscriber connection failed');
  };
  subscriber.pc = pc;
  return pc;
}

handlers.offer = async (msg) => {
  const pc = ensureSub();
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
};

// The live's profile says how much buffer its players keep (`playout_delay_ms`): 0 for an
// interactive live, more for one that must never freeze. Where the browser lets us, every
// receiver aims at it (RTCRtpReceiver.jitterBufferTarget, in ms).
function aimJitterBuffer(receiver) {
  const ms = room.profile?.playout_delay_ms;
  if (ms === undefined || !('jitterBufferTarget' in receiver)) return;
  try { receiver.jitterBufferTarget = ms; } catch (e) { console.warn('jitterBufferTarget', e); }
}

// Who joined before the host made the room live with another profile gets it now.
handlers.live_profile = (msg) => {
  room.profile = msg.profile;
  for (const r of subscriber.pc?.getReceivers() ?? []) aimJitterBuffer(r);
  renderHeader();
};

// Our connection cannot carry the lowest video layer: the server sends audio only until it can.
handlers.audio_only = (msg) => {
  notices.audioOnly = msg.active;
  renderNotices();
};

// Candidates for both sides arrive here; `target` says which peer connection they are for.
handlers.candidate = (msg) => {
  const pc = msg.target === 'publisher' ? publisher.pc : subscriber.pc;
  if (pc) pc.addIceCandidate(msg.candidate).catch(() => {});
};

// The quality the viewer picked; a fresh session is told again after each join.
export function sendQuality() {
  if (subscriber.quality !== 'auto') send({ type: 'quality', quality: subscriber.quality });
}

export function wireQuality() {
  $('quality').addEventListener('change', () => {
    subscriber.quality = $('quality').value;
    send({ type: 'quality', quality: subscriber.quality });
  });
}
