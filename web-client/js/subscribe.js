// The subscriber peer connection: the server offers everyone else's tracks, we answer.

import { state } from './state.js';
import { restart, send } from './signal.js';
import { renderStage } from './stage.js';

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

export async function onOffer(sdp) {
  const pc = ensureSub();
  await pc.setRemoteDescription({ type: 'offer', sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  send({ type: 'answer', sdp: pc.localDescription.sdp });
}
