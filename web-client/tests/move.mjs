// The "move" scenario of e2e.mjs (issue #17, recovery): a Chromium viewer whose address changes
// mid-stream keeps its place. The viewer's browser runs in a network namespace of its own, joined
// to this one by veth pairs; a server of its own listens on the host side. While the viewer
// watches the host, its network changes, in two ways (one browser each):
//
// - a new address: the only address is swapped (10.213.7.2 → 10.213.7.3, as when a phone gets a
//   new address from the same network); Chromium learns of the new address only when its
//   network-change notifier fires, ~2 s after the change;
// - Wi-Fi → cellular: two networks are up from the start ("Wi-Fi" 10.213.7.2 and "cellular"
//   10.213.8.2 on a second veth pair, as a phone has both), and the one the media runs over
//   goes away.
//
// Either way the WebSocket and the media path die with the old address. The page must notice,
// resume its participant on a new WebSocket and restart ICE — no new join — and play again.
// Needs root (ip netns); the network namespace is deleted afterwards.

import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const NS = 'onair-e2e-move';
const HOST_IF = 'oe2e-mv-h';
const NS_IF = 'oe2e-mv-n';
const HOST_IF2 = 'oe2e-mv-h2';
const NS_IF2 = 'oe2e-mv-n2';
const SERVER_IP = '10.213.7.1';
const OLD_IP = '10.213.7.2';
const NEW_IP = '10.213.7.3';
const CELL_GW = '10.213.8.1';
const CELL_IP = '10.213.8.2';

const ip = (...args) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const inNs = (script) => ip('netns', 'exec', NS, 'sh', '-c', script);

function netnsDown() {
  try { ip('netns', 'del', NS); } catch { /* not there */ }
  for (const dev of [HOST_IF, HOST_IF2]) {
    try { ip('link', 'del', dev); } catch { /* went with the namespace */ }
  }
}

// A veth pair from here into the namespace, our end at `hostAddr`/24 and up; the namespace's end
// is configured by the caller. No IPv6 link-local addresses: one appearing a second after the
// link came up is a network change to the host's Chromium too, which then aborts the page loads
// in flight (ERR_NETWORK_CHANGED) and leaves the host's page without its scripts.
function vethPair(hostIf, nsIf, hostAddr) {
  ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
  ip('link', 'set', hostIf, 'addrgenmode', 'none');
  ip('link', 'set', nsIf, 'addrgenmode', 'none');
  ip('link', 'set', nsIf, 'netns', NS);
  ip('addr', 'add', `${hostAddr}/24`, 'dev', hostIf);
  ip('link', 'set', hostIf, 'up');
}

function netnsUp(cellular) {
  netnsDown();
  ip('netns', 'add', NS);
  vethPair(HOST_IF, NS_IF, SERVER_IP);
  // promote_secondaries: removing the old address keeps the new one (same subnet) and its route.
  inNs(`ip link set lo up && ip addr add ${OLD_IP}/24 dev ${NS_IF} && ip link set ${NS_IF} up`
    + ` && sysctl -qw net.ipv4.conf.all.promote_secondaries=1 net.ipv4.conf.${NS_IF}.promote_secondaries=1`);
  if (cellular) {
    // The second network: its own link and subnet; what leaves from its address goes out over
    // it (a rule of its own), and it is the default route once the Wi-Fi subnet is gone.
    vethPair(HOST_IF2, NS_IF2, CELL_GW);
    inNs(`ip addr add ${CELL_IP}/24 dev ${NS_IF2} && ip link set ${NS_IF2} up`
      + ` && ip rule add from ${CELL_IP} table 100 && ip route add default via ${CELL_GW} dev ${NS_IF2} table 100`
      + ` && ip route add default via ${CELL_GW} dev ${NS_IF2} metric 200`);
  }
}

export async function move(h) {
  if (process.getuid?.() !== 0) {
    h.check('a viewer whose address changes resumes without a join', false, 'this scenario needs root (ip netns); run ./test.sh as root');
    return;
  }
  await variant(h, false);
  await variant(h, true);
}

// One browser whose network changes: a new address (cellular false) or Wi-Fi → cellular.
async function variant(h, cellular) {
  const { check, until, shot, bin, freePort, chromiumPath, chromiumArgs } = h;
  const label = cellular
    ? 'a viewer on Wi-Fi and cellular whose media network goes away plays again on the other within 2 s, without a join (resumed, ICE restarted)'
    : 'a viewer whose address changes plays again without a join (resumed, ICE restarted)';
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-e2e-move-'));
  // The viewer's browser, started inside the namespace (playwright talks to it over a pipe).
  const wrapper = path.join(data, 'chromium-in-netns');
  fs.writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NS} ${chromiumPath} "$@"\n`, { mode: 0o755 });
  let server;
  const browsers = [];
  try {
    netnsUp(cellular);
    const [port, adminPort, rtmpPort] = [await freePort(), await freePort(), await freePort()];
    const base = `http://${SERVER_IP}:${port}`;
    server = spawn(bin, ['--dev', '--http-bind', `${SERVER_IP}:${port}`, '--udp-bind', `${SERVER_IP}:0`, '--admin-bind', `127.0.0.1:${adminPort}`], {
      env: { ...process.env, ONAIR_AUTH_SECRET: 'e2e-move-secret', RUST_LOG: process.env.RUST_LOG || 'warn,rtc_dtls=error',
        ONAIR_RTC_ADVERTISE_IP: SERVER_IP, ONAIR_RTMP_BIND: `127.0.0.1:${rtmpPort}`, ONAIR_RTMP_KEYS_FILE: path.join(data, 'keys.json'),
        ONAIR_STORE_URL: `sqlite:${path.join(data, 'onair.db')}`, ONAIR_ARCHIVE_RECORD: 'false',
      // The browsers run on the server's machine here: signaling's threads keep their share of it
      // (a node runs alone; http.thread_nice lets its media threads win its cores).
      ONAIR_HTTP_THREAD_NICE: '0' },
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
    const hostLog = [];
    host.on('console', (m) => { hostLog.push(`${new Date().toISOString().slice(11, 23)} ${m.text()}`); });
    await host.goto(`${base}/?token=${encodeURIComponent(await token('mover-host', 'host'))}`);
    // The host goes live once its page offers it (a camera preview first); if it never does,
    // say what the page shows instead.
    await host.locator('#go-live').waitFor({ state: 'visible', timeout: 20_000 }).catch(async (e) => {
      await shot(host, cellular ? 'move-cellular-host-stuck.png' : 'move-host-stuck.png');
      const text = await host.evaluate(() => document.body.innerText.replace(/\s+/g, ' ').slice(0, 300)).catch(() => '?');
      const online = await host.evaluate(() => navigator.onLine).catch(() => '?');
      throw new Error(`the host page offers no Go live (${e.message.split('\n')[0]}); it shows: ${text}; navigator.onLine ${online}; its log: ${hostLog.slice(-12).join(' | ')}`);
    });
    await host.click('#go-live');
    const viewer = await (await viewerBrowser.newContext({ viewport: { width: 360, height: 740 } })).newPage();
    viewer.on('pageerror', (e) => console.error(`[move-viewer] page error: ${e.message}`));
    // The page's own account of a recovery (E2E_LOG_ALL=move-viewer: everything it logs).
    viewer.on('console', (m) => {
      if (/media path|restart|reconnect|resum/i.test(m.text()) || process.env.E2E_LOG_ALL === 'move-viewer') {
        console.error(`[move-viewer ${new Date().toISOString().slice(11, 23)}] ${m.text()}`);
      }
    });
    // A request of the page that fails, and its errors: what a page left without its scripts
    // needs to be understood.
    const viewerFailures = [];
    viewer.on('requestfailed', (r) => viewerFailures.push(`${new Date().toISOString().slice(11, 23)} ${new URL(r.url()).pathname} ${r.failure()?.errorText}`));
    viewer.on('console', (m) => { if (m.type() === 'error') viewerFailures.push(`${new Date().toISOString().slice(11, 23)} console: ${m.text()}`); });
    await viewer.goto(`${base}/?token=${encodeURIComponent(await token('mover', 'viewer'))}`);
    // The page's scripts run, or it is loaded once more — with what failed said: one run in
    // about ten, the viewer's page came up without them (window.__onair missing for 30 s).
    let reloaded = null;
    const scripted = () => viewer.evaluate(() => !!window.__onair).catch(() => false);
    if (!(await until('the viewer page\'s scripts', scripted, 8000).catch(() => false))) {
      const state = await viewer.evaluate(() => ({ ready: document.readyState, scripts: document.scripts.length })).catch((e) => e.message);
      reloaded = `${JSON.stringify(state)}; failed: ${viewerFailures.join(' | ') || 'nothing reported'}`;
      console.error(`[move-viewer] the page has no scripts after 8 s (${reloaded}): loading it again`);
      await viewer.reload();
    }

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
      return l.frames > 30 && (l.local === OLD_IP || (cellular && l.local === CELL_IP)) ? l : null;
    }, 30_000);

    // A new address for the only network; or the network the media runs over goes away, and
    // the other one (up all along) is what is left.
    let target = NEW_IP;
    if (!cellular) inNs(`ip addr add ${NEW_IP}/24 dev ${NS_IF} && ip addr del ${OLD_IP}/24 dev ${NS_IF}`);
    else if (before.local === OLD_IP) { target = CELL_IP; inNs(`ip addr del ${OLD_IP}/24 dev ${NS_IF}`); }
    else { target = OLD_IP; inNs(`ip addr del ${CELL_IP}/24 dev ${NS_IF2}`); }
    const movedAt = Date.now();
    console.error(`[move] ${new Date(movedAt).toISOString().slice(11, 23)} ${before.local} went away`);
    // Frames decoded again: the old address cannot carry anything, and five frames are more than
    // the jitter buffer held at the move (decoding stops within a frame or two). Chrome's stats may call the old
    // pair selected for a while after media runs on the new one (it keeps a dead pair selected
    // until it times out when another network was up all along): that switch is waited for
    // next, and reported.
    const debug = (l) => process.env.E2E_LOG_ALL === 'move-viewer' && console.error(`[move ${new Date().toISOString().slice(11, 23)}] ${JSON.stringify(l)}`);
    let after = await until('the viewer playing again', async () => {
      const l = await look();
      debug(l);
      return l.frames >= before.frames + 5 ? { ...l, at: Date.now() } : null;
    }, 20_000).catch((e) => ({ error: e.message }));
    const secs = after.at ? (after.at - movedAt) / 1000 : null;
    let switched = null;
    if (!after.error) {
      after = await until('Chrome\'s selected pair on the new address', async () => {
        const l = await look();
        debug(l);
        return l.local === target ? { ...l, at: after.at } : null;
      }, 15_000).catch((e) => ({ ...after, error: e.message }));
      switched = (Date.now() - movedAt) / 1000;
    }
    const sameParticipant = after.me === before.me;
    const freshJoins = (after.joins ?? 0) - (after.resumes ?? 0) - (before.joins - before.resumes);
    check(label,
      !after.error && sameParticipant && freshJoins === 0 && after.resumes === before.resumes + 1 && after.path?.restarts >= 1 && secs <= (cellular ? 2 : 6),
      after.error ?? `media again ${secs.toFixed(2)} s after the move (Chrome's selected pair on the new address by ${switched.toFixed(1)} s), ${before.local} → ${after.local}; participant kept: ${sameParticipant}; `
        + `resumes ${before.resumes} → ${after.resumes}, fresh joins +${freshJoins}, ICE restarts ${after.path?.restarts}`
        + (reloaded ? `; the page was loaded twice (first without its scripts: ${reloaded})` : ''));
    await sleep(1000);
    await shot(viewer, cellular ? 'move-cellular-viewer-after-360.png' : 'move-viewer-after-360.png');
    if (!cellular) await shot(host, 'move-host.png');
  } catch (e) {
    check(label, false, e.message);
  } finally {
    for (const b of browsers) await b.close().catch(() => {});
    server?.kill('SIGKILL');
    netnsDown();
    fs.rmSync(data, { recursive: true, force: true });
  }
}
