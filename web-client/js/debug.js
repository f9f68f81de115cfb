// A small hook for tests and debugging (`window.__onair`): the state, inbound and outbound media
// as getStats() sees them, and the server's view of our session.

import { chat, link, notices, publisher, room, session, stageMoves, subscriber } from './state.js';
import { liveTimerRunning } from './ui.js';
import { handlers, send } from './signal.js';
import { bursts } from './reactions.js';
import { openReports } from './moderation.js';
import { path } from './path.js';

const statsWaiters = []; // serverStats() calls waiting for their `stats` answer, oldest first

handlers.stats = (msg) => { const r = statsWaiters.shift(); if (r) r(msg); };

window.__onair = {
  // The groups, and under their old flat names the three fields the e2e test reads.
  state: {
    session, room, link, publisher, subscriber, chat, stageMoves, notices,
    get ws() { return link.ws; },
    get local() { return publisher.local; },
    get timer() { return liveTimerRunning() || null; },
  },
  async inbound() {
    if (!subscriber.pc) return [];
    const out = [];
    const report = await subscriber.pc.getStats();
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
  firstFrameAt() { return subscriber.firstFrameAt; },
  serverStats() {
    return new Promise((resolve) => { statsWaiters.push(resolve); send({ type: 'get_stats' }); });
  },
  async outbound() {
    if (!publisher.pc) return [];
    const out = [];
    (await publisher.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.push({ rid: r.rid, bytesSent: r.bytesSent, framesSent: r.framesSent ?? 0, framesEncoded: r.framesEncoded ?? 0,
          frameHeight: r.frameHeight ?? 0, limit: r.qualityLimitationReason ?? null });
      }
    });
    return out;
  },
  // The comments as drawn ("Name Badge text"), floats drawn so far, the open reports.
  comments() { return [...document.querySelectorAll('#comments .comment .body')].map((b) => b.textContent); },
  bursts() { return bursts.shown; },
  reports() { return openReports(); },
  joins() { return session.joins; },
  // ICE restarts after a lost path, and whether one waits for the resumed join.
  path() { return { restarts: path.restarts, pending: path.pending }; },
  // The live's profile name, and the encodings our video sender uses (RTCRtpSender.getParameters).
  profile() { return room.profile?.name ?? null; },
  encodings() {
    const s = publisher.pc?.getSenders().find((x) => x.track?.kind === 'video');
    return s ? s.getParameters().encodings.map((e) => ({ rid: e.rid, active: e.active, scaleResolutionDownBy: e.scaleResolutionDownBy, maxBitrate: e.maxBitrate, maxFramerate: e.maxFramerate })) : [];
  },
  jitterTargets() { return (subscriber.pc?.getReceivers() ?? []).map((r) => r.jitterBufferTarget ?? null); },
  // Hand the page a server message as if it came over the socket (screenshots of states the
  // test cannot cause on loopback, such as audio only).
  inject(msg) { return handlers[msg.type]?.(msg); },
  connText() { return document.getElementById('conn-text').textContent; },
};
