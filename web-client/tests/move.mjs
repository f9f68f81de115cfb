// The "move" scenario of e2e.mjs (issue #17, recovery): a Chromium viewer whose address changes
// mid-stream keeps its place. The viewer's browser runs in a network namespace of its own, joined
// to this one by a veth pair; a server of its own listens on the host side of that pair. While
// the viewer watches the host, its address is swapped (10.213.7.2 → 10.213.7.3, as when a phone
// gets a new address): its WebSocket and its media path die with the old address. The page must
// notice, resume its participant on a new WebSocket and restart ICE — no new join — and play
// again. Needs root (ip netns); the network namespace is deleted afterwards.

import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const NS = 'onair-e2e-move';
const HOST_IF = 'oe2e-mv-h';
const NS_IF = 'oe2e-mv-n';
const SERVER_IP = '10.213.7.1';
const OLD_IP = '10.213.7.2';
const NEW_IP = '10.213.7.3';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const inNs = (script) => ip('netns', 'exec', NS, 'sh', '-c', script);

function netnsDown() {
  try { ip('netns', 'del', NS); } catch { /* not there */ }
  try { ip('link', 'del', HOST_IF); } catch { /* went with the namespace */ }
}

function netnsUp() {
  netnsDown();
  ip('netns', 'add', NS);
  ip('link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF);
  ip('link', 'set', NS_IF, 'netns', NS);
  ip('addr', 'add', `${SERVER_IP}/24`, 'dev', HOST_IF);
  ip('link', 'set', HOST_IF, 'up');
  // promote_secondaries: removing the old address keeps the new one (same subnet) and its route.
  inNs(`ip link set lo up && ip addr add ${OLD_IP}/24 dev ${NS_IF} && ip link set ${NS_IF} up`
    + ` && sysctl -qw net.ipv4.conf.all.promote_secondaries=1 net.ipv4.conf.${NS_IF}.promote_secondaries=1`);
}

export async function move(h) {
  const { check, until, shot, bin, freePort, chromiumPath, chromiumArgs } = h;
  if (process.getuid?.() !== 0) {
    check('a viewer whose address changes resumes without a join', false, 'this scenario needs root (ip netns); run ./test.sh as root');
    return;
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-e2e-move-'));
  // The viewer's browser, started inside the namespace (playwright talks to it over a pipe).
  const wrapper = path.join(data, 'chromium-in-netns');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NS} ${chromiumPath} "$@"\n`, { mode: 0o755 });
  let server;
  const browsers = [];
  try {
    netnsUp();
    const [port, adminPort, rtmpPort] = [await freePort(), await freePort(), await freePort()];
    const base = `http://${SERVER_IP}:${port}`;
    server = spawn(bin, ['--dev', '--http-bind', `${SERVER_IP}:${port}`, '--udp-bind', `${SERVER_IP}:0`, '--admin-bind', `127.0.0.1:${adminPort}`], {
      env: { ...process.env, ONAIR_AUTH_SECRET: 'e2e-move-secret', RUST_LOG: process.env.RUST_LOG || 'warn,rtc_dtls=error',
        ONAIR_RTC_ADVERTISE_IP: SERVER_IP, ONAIR_RTMP_BIND: `127.0.0.1:${rtmpPort}`, ONAIR_RTMP_KEYS_FILE: path.join(data, 'keys.json'),
        ONAIR_STORE_URL: `sqlite:${path.join(data, 'onair.db')}` },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    await until('the move scenario\'s server', async () => (await fetch(`${base}/healthz`)).ok, 15_000);
    const token = async (identity, role) => {
      const q = new URLSearchParams({ room: 'move', identity, role, name: identity });
      return (await (await fetch(`${base}/api/dev/token?${q}`)).json()).token;
    };
    // The page (the host's camera, among others) needs a secure origin; this one is plain http
    // on a veth address, as a deployment behind TLS is not.
    const secure = `--unsafely-treat-insecure-origin-as-secure=${base}`;
    const hostBrowser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: [...chromiumArgs, secure] });
    browsers.push(hostBrowser);
    // No loopback candidates in the namespace: the viewer reaches the server over the veth only.
    const viewerBrowser = await chromium.launch({ executablePath: wrapper, headless: true,
      args: [...chromiumArgs.filter((a) => a !== '--allow-loopback-in-peer-connection'), secure] });
    browsers.push(viewerBrowser);

    const host = await (await hostBrowser.newContext({ permissions: ['camera', 'microphone'] })).newPage();
    host.on('pageerror', (e) => console.error(`[move-host] page error: ${e.message}`));
    await host.goto(`${base}/?token=${encodeURIComponent(await token('mover-host', 'host'))}`);
    await host.click('#go-live');
    const viewer = await (await viewerBrowser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
    viewer.on('pageerror', (e) => console.error(`[move-viewer] page error: ${e.message}`));
    await viewer.goto(`${base}/?token=${encodeURIComponent(await token('mover', 'viewer'))}`);

    // What the viewer plays and over which of its addresses.
    const look = () => viewer.evaluate(async () => {
      const pc = window.__onair.state.subscriber.pc;
      if (!pc) return { frames: 0, local: null };
      const stats = await pc.getStats();
      let frames = 0;
      let pairId = null;
      stats.forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded ?? 0;
        if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
      });
      const pair = pairId && stats.get(pairId);
      const local = pair && stats.get(pair.localCandidateId);
      const s = window.__onair.state.session;
      return { frames, local: local?.address ?? null, me: s.me?.id ?? null, joins: s.joins, resumes: s.resumes, path: window.__onair.path() };
    });
    const before = await until('the viewer playing the host', async () => {
      const l = await look();
      return l.frames > 30 && l.local === OLD_IP ? l : null;
    }, 30_000);

    inNs(`ip addr add ${NEW_IP}/24 dev ${NS_IF} && ip addr del ${OLD_IP}/24 dev ${NS_IF}`);
    const movedAt = Date.now();
    // Frames decoded again, over the new address (the old one cannot carry anything).
    const after = await until('the viewer playing again from its new address', async () => {
      const l = await look();
      return l.local === NEW_IP && l.frames >= before.frames + 5 ? { ...l, at: Date.now() } : null;
    }, 20_000).catch((e) => ({ error: e.message }));
    const secs = after.at ? (after.at - movedAt) / 1000 : null;
    const sameParticipant = after.me === before.me;
    const freshJoins = (after.joins ?? 0) - (after.resumes ?? 0) - (before.joins - before.resumes);
    check('a viewer whose address changes plays again without a join (resumed, ICE restarted)',
      !after.error && sameParticipant && freshJoins === 0 && after.resumes === before.resumes + 1 && after.path?.restarts >= 1 && secs <= 6,
      after.error ?? `media again ${secs.toFixed(2)} s after the move, ${before.local} → ${after.local}; participant kept: ${sameParticipant}; `
        + `resumes ${before.resumes} → ${after.resumes}, fresh joins +${freshJoins}, ICE restarts ${after.path?.restarts}`);
    await sleep(1000);
    await shot(viewer, 'move-viewer-after-360.png');
    await shot(host, 'move-host.png');
  } catch (e) {
    check('a viewer whose address changes plays again without a join (resumed, ICE restarted)', false, e.message);
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    server?.kill('SIGKILL');
    netnsDown();
    fs.rmSync(data, { recursive: true, force: true });
  }
}
