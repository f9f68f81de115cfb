// The media path: notice when the network under our peer connections changes (Wi-Fi to
// cellular, a new address) and move the media onto the new one — for a viewer with an ICE
// restart: the same participant, subscriptions and DTLS session, no new join (docs/protocol.md
// §3.6).
//
// Chrome says `disconnected` only ~5 s after its address went away; its stats show sooner that
// nothing arrives on the subscriber connection's selected candidate pair any more (and, at its
// next check, that the check goes unanswered). Then the WebSocket (which used the old address
// too) resumes at once, and the subscriber connection restarts ICE by asking the server for an
// offer with new credentials. A page that publishes is not watched: restarting its publisher
// connection means renegotiating it, and a renegotiated simulcast publisher connection loses its
// layers in the server's media stack (docs/architecture.md §9); it starts over when a connection
// fails, as before.

import { link, publisher, session, subscriber } from './state.js';
import { connect, send } from './signal.js';

const CHECK_MS = 100;       // how often the selected pairs are looked at
const SILENT_MS = 250;      // media stopped this long: ask the server whether it hears us (a ping costs nothing)
const PROBE_MS = 500;       // ... and no answer (nor anything else) within this: the path is gone
const UNANSWERED_MS = 1500; // Chrome's check unanswered and nothing received this long: gone
const MIN_GAP_MS = 3000;    // at most one recovery this often (it takes ~100 ms on a good path)

export const path = {
  restarts: 0,     // ICE restarts done
  pending: false,  // a recovery waits for the resumed `joined` to restart ICE
  last: 0,         // when the last recovery started (ms)
};

const watched = new WeakMap(); // RTCPeerConnection -> { pair, bytes, lastRx, streak, wasFlowing, probeAt }

// Whether the subscriber connection's path looks gone: media was flowing (bytes grew at every
// check), then nothing came for SILENT_MS, and a `ping` sent over the WebSocket then got no
// answer (nor any other message) within PROBE_MS — the network under both is gone. Media also
// stops for reasons on the sending side (a publisher's own network dropped, the stage emptied,
// a camera stopped): then the WebSocket still answers, and the connection is only judged again
// once media has flowed again. Or Chrome's own check on the pair went unanswered and nothing
// came for UNANSWERED_MS (the media path alone is gone). False while there is no selected pair
// (not connected yet: nothing to judge).
async function lost(pc) {
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId; });
  const pair = pairId && stats.get(pairId);
  if (!pair) { watched.delete(pc); return false; }
  const now = Date.now();
  const bytes = pair.bytesReceived ?? 0;
  let w = watched.get(pc);
  if (!w || w.pair !== pairId) {
    w = { pair: pairId, bytes, lastRx: now, streak: 0, wasFlowing: false, probeAt: 0 };
    watched.set(pc, w);
    return false;
  }
  if (bytes !== w.bytes) {
    w.bytes = bytes;
    w.lastRx = now;
    w.streak = Math.min(w.streak + 1, 10);
    w.probeAt = 0;
    return false;
  }
  if (w.streak > 0) { w.wasFlowing = w.streak >= 3; w.streak = 0; }
  const silent = now - w.lastRx;
  if (silent >= UNANSWERED_MS && pair.state !== 'succeeded') return true;
  if (!w.wasFlowing || silent < SILENT_MS) return false;
  if (!w.probeAt) {
    w.probeAt = now;
    send({ type: 'ping', ts: now });
    return false;
  }
  if (link.lastMessageAt >= w.probeAt) {
    // The server hears us and answers: the sender stopped, not our network.
    w.wasFlowing = false;
    w.probeAt = 0;
    return false;
  }
  return now - w.probeAt >= PROBE_MS;
}

function recover(why) {
  const now = Date.now();
  if (path.pending || now - path.last < MIN_GAP_MS || session.leaving || session.ended) return;
  path.last = now;
  console.info('media path lost:', why);
  path.pending = true;
  // A new WebSocket at once (the old one is likely gone with the old address); `joined` with
  // `resumed` then calls restartIce(). A fresh `joined` builds new peer connections instead.
  connect();
}

// The resumed `joined` after a recovery: the subscriber connection restarts ICE.
export function restartIce() {
  if (!path.pending) return;
  path.pending = false;
  path.restarts++;
  if (subscriber.pc) send({ type: 'ice_restart' });
}

// A fresh `joined`: the peer connections are new, nothing to restart.
export function forgetRecovery() {
  path.pending = false;
}

export function watchPath() {
  let busy = false;
  setInterval(async () => {
    const pc = subscriber.pc;
    // A page that publishes is left to its connections' own failure (then it starts over,
    // signal.js): see the top of this file.
    if (busy || path.pending || session.leaving || session.ended || !pc || publisher.pc) return;
    if (pc.connectionState === 'closed' || pc.connectionState === 'failed') return;
    busy = true;
    try {
      if (pc.iceConnectionState === 'disconnected') recover('subscriber connection disconnected');
      else if (await lost(pc)) recover('nothing arrives on the subscriber connection');
    } catch (e) {
      console.warn('path check', e);
    } finally {
      busy = false;
    }
  }, CHECK_MS);
}
