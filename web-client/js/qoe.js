// Player QoE (docs/protocol.md §15): every 10 s while watching, and when leaving, the page tells
// the server what its player saw — time to first frame, frames decoded, freezes and their
// length (the browser's own inbound-rtp counters), the layer shown, audio concealed, connection
// changes — so the operator's KPIs come from real players. And *Report a problem*.

import { session, subscriber } from './state.js';
import { $, flash } from './ui.js';
import { handlers, send } from './signal.js';

const EVERY_MS = 10_000;
const TAGS = [
  ['startup', 'The video does not start'],
  ['buffering', 'It stops or stutters'],
  ['audio', 'Sound problem'],
  ['access', 'I cannot get in or see the live'],
  ['embed', 'The embedded player misbehaves'],
];

// One visit (from `joined` to leaving or the next `joined`): counters are cumulative within it.
const visit = {
  joinedAt: null,     // performance.now() at `joined`
  timer: null,
  lastFreezes: 0,     // freezes and freeze time at the previous report
  lastFreezeMs: 0,
  lastSent: null,     // the last report sent (attached to problem reports by the server)
  connectionChanges: 0,
  watchedPc: null,
};

async function measure() {
  const pc = subscriber.pc;
  const out = { frames: 0, freezes: 0, freezeMs: 0, concealedMs: 0, width: 0 };
  if (!pc) return out;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') {
      out.frames += s.framesDecoded || 0;
      out.freezes += s.freezeCount || 0;
      out.freezeMs += Math.round((s.totalFreezesDuration || 0) * 1000);
      out.width = Math.max(out.width, s.frameHeight || 0);
    } else if (s.kind === 'audio' && s.concealedSamples) {
      out.concealedMs += Math.round((s.concealedSamples / 48_000) * 1000);
    }
  });
  return out;
}

function watchConnection() {
  const pc = subscriber.pc;
  if (!pc || visit.watchedPc === pc) return;
  visit.watchedPc = pc;
  let connected = false;
  pc.addEventListener('connectionstatechange', () => {
    if (pc.connectionState === 'connected' && !connected) { connected = true; return; }
    if (connected) visit.connectionChanges += 1;
  });
}

const layerOf = (height) => (height === 0 ? null : height <= 240 ? 'q' : height <= 480 ? 'h' : 'f');

export async function report() {
  if (visit.joinedAt === null || session.claims?.role === 'host') return;
  watchConnection();
  const m = await measure();
  const first = subscriber.firstFrameAt === null ? null : Math.max(0, Math.round(subscriber.firstFrameAt - visit.joinedAt));
  // Freezes that ended since the last report: the browser gives their count and total time,
  // so each is reported at the interval's mean length.
  const newFreezes = Math.max(0, m.freezes - visit.lastFreezes);
  const newMs = Math.max(0, m.freezeMs - visit.lastFreezeMs);
  const recoveries = Array.from({ length: Math.min(newFreezes, 20) }, () => Math.round(newMs / newFreezes));
  visit.lastFreezes = m.freezes;
  visit.lastFreezeMs = m.freezeMs;
  const msg = {
    type: 'qoe',
    client: 'browser',
    first_frame_ms: first,
    frames_decoded: m.frames,
    freezes: m.freezes,
    freeze_ms: m.freezeMs,
    recoveries_ms: recoveries,
    layer: layerOf(m.width),
    concealed_ms: m.concealedMs,
    connection_changes: visit.connectionChanges,
    watch_ms: Math.round(performance.now() - visit.joinedAt),
  };
  visit.lastSent = msg;
  send(msg);
}

function start() {
  clearInterval(visit.timer);
  Object.assign(visit, { joinedAt: performance.now(), lastFreezes: 0, lastFreezeMs: 0, connectionChanges: 0, watchedPc: null });
  visit.timer = setInterval(() => { report().catch((e) => console.warn('qoe', e)); }, EVERY_MS);
}

function openReport() {
  const dialog = $('problem-dialog');
  $('problem-text').value = '';
  $('problem-note').textContent = '';
  dialog.showModal();
}

async function sendReport(e) {
  e.preventDefault();
  const tag = $('problem-form').elements.tag.value;
  if (!tag) { $('problem-note').textContent = 'Pick what went wrong.'; return; }
  const c = navigator.connection;
  send({
    type: 'report_problem',
    tag,
    text: $('problem-text').value.trim() || undefined,
    context: {
      user_agent: navigator.userAgent.slice(0, 300),
      connection: c?.effectiveType ?? null,
      downlink_mbps: c?.downlink ?? null,
      viewport: `${innerWidth}x${innerHeight}`,
      role: session.claims?.role ?? null,
      language: navigator.language,
      online: navigator.onLine,
    },
  });
  $('problem-dialog').close();
}

export function wireQoe() {
  const previous = handlers.joined;
  // After the page has taken the room in (session.js), a new visit starts.
  handlers.joined = async (msg) => { await previous(msg); start(); };
  handlers.problem_reported = () => flash('Thanks — your report reached the team.', 3000);
  const list = $('problem-tags');
  for (const [value, label] of TAGS) {
    const id = `problem-tag-${value}`;
    const input = Object.assign(document.createElement('input'), { type: 'radio', name: 'tag', value, id });
    const l = Object.assign(document.createElement('label'), { htmlFor: id });
    l.append(input, ` ${label}`);
    list.append(l);
  }
  $('problem-open').addEventListener('click', openReport);
  $('problem-cancel').addEventListener('click', () => $('problem-dialog').close());
  $('problem-form').addEventListener('submit', sendReport);
  // The last report as the page goes (the socket is still open at pagehide).
  addEventListener('pagehide', () => { report().catch(() => {}); });
}

// For tests (web-client/tests/e2e.mjs): the report now, without waiting for the timer.
window.__onairQoe = { report, last: () => visit.lastSent };
