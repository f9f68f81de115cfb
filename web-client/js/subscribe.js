// The subscriber side: the server offers everyone else's tracks on one peer connection and we
// answer. Also the viewer's quality cap.

import { publisher, subscriber } from './state.js';
import { $ } from './ui.js';
import { handlers, restart, send } from './signal.js';
import { renderStage } from './stage.js';

function ensureSub() {
  if (subscriber.pc) return subscriber.pc;
  const pc = new RTCPeerConnection();
  pc.onicecandidate = (e) => { if (e.candidate) send({ type: 'candidate', target: 'subscriber', candidate: e.candidate.toJSON() }); };
  pc.ontrack = (e) => {
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
