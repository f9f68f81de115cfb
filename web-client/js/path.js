// The media path: notice when the network under our peer connections changes (Wi-Fi to
// cellular, a new address) and move the media onto the new one with an ICE restart — the same
// participant, tracks, seat and DTLS sessions, no new join (docs/protocol.md §3.6).
//
// Chrome says `disconnected` only ~5 s after its address went away; its stats show sooner that
// nothing arrives on the selected candidate pair any more (and, at its next check, that the
// check goes unanswered). Then the WebSocket (which used the old address too) resumes at once,
// and each peer connection restarts ICE — the publisher's by a new offer, the subscriber's by
// asking the server for one.

import { publisher, session, subscriber } from './state.js';
import { connect, send } from './signal.js';

const CHECK_MS = 200;       // how often the selected pairs are looked at
const UNANSWERED_MS = 500;  // nothing received this long (see `lost`): the path is gone
const MIN_GAP_MS = 3000;    // at most one recovery this often (it takes ~100 ms on a good path)

export const path = {
  restarts: 0,     // ICE restarts done
  pending: false,  // a recovery waits for the resumed `joined` to restart ICE
  last: 0,         // when the last recovery started (ms)
};

const watched = new WeakMap(); // RTCPeerConnection -> { pair, bytes, lastRx, streak, wasFlowing }

// Whether `pc`'s path looks gone: nothing received on its selected pair for UNANSWERED_MS,
// and either media was flowing until then (bytes grew at every check: a stream does not stop
// without a word) or Chrome's own check on the pair went unanswered (a quiet connection). False
// while there is no selected pair (not connected yet: nothing to judge).
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
    w = { pair: pairId, bytes, lastRx: now, streak: 0, wasFlowing: false };
    watched.set(pc, w);
    return false;
  }
  if (bytes !== w.bytes) {
    w.bytes = bytes;
    w.lastRx = now;
    w.streak = Math.min(w.streak + 1, 10);
    return false;
  }
  if (w.streak > 0) { w.wasFlowing = w.streak >= 3; w.streak = 0; }
  return now - w.lastRx >= UNANSWERED_MS && (w.wasFlowing || pair.state !== 'succeeded');
}

function recover(why) {
  const now = Date.now();
  if (path.pending || now - path.last < MIN_GAP_MS || session.leaving || session.ended) return;
  path.pending = true;
  path.last = now;
  console.info('media path lost:', why);
  // A new WebSocket at once (the old one is likely gone with the old address); `joined` with
  // `resumed` then calls restartIce(). A fresh `joined` builds new peer connections instead.
  connect();
}

// The resumed `joined` after a recovery: restart ICE on both connections.
export async function restartIce() {
  if (!path.pending) return;
  path.pending = false;
  path.restarts++;
  if (subscriber.pc) send({ type: 'ice_restart' });
  const pc = publisher.pc;
  if (pc && pc.signalingState === 'stable') {
    const offer = await pc.createOffer({ iceRestart: true });
    await pc.setLocalDescription(offer);
    send({ type: 'publish', sdp: pc.localDescription.sdp });
  }
}

// A fresh `joined`: the peer connections are new, nothing to restart.
export function forgetRecovery() {
  path.pending = false;
}

export function watchPath() {
  let busy = false;
  setInterval(async () => {
    if (busy || path.pending || session.leaving || session.ended) return;
    busy = true;
    try {
      for (const [name, pc] of [['subscriber', subscriber.pc], ['publisher', publisher.pc]]) {
        if (!pc || pc.connectionState === 'closed' || pc.connectionState === 'failed') continue;
        if (pc.iceConnectionState === 'disconnected' || await lost(pc)) {
          recover(`${name} connection: no answer on its path`);
          break;
        }
      }
    } catch (e) {
      console.warn('path check', e);
    } finally {
      busy = false;
    }
  }, CHECK_MS);
}
