// The "cluster" scenario of e2e.mjs (issue #19, many nodes): two nodes of their own and a Redis
// server of its own (redis-server on a free loopback port, nothing persisted). A host page
// loaded from node A goes live, so the live is placed on A. A viewer page loaded from node B:
//
// - B answers its join with `redirect`; the page opens its WebSocket at A, joins there, and plays
//   the host (frames decoded, the host's tile), without a reload or a visible error;
// - node A is killed (SIGKILL): the page's next attempt at A fails, so it goes back to B (its own
//   server), which, once A dropped out of the registry, takes the live over: the page joins again
//   through B — the time from the kill is printed.
//
// - node C has the cascade on (ONAIR_CLUSTER_SECRET, as A has): a viewer page loaded from C is
//   not redirected but served there as an edge of the live — it plays the host from C's media
//   port, and its comment reaches the host's page on A (the room is A's).
//
// Screenshots: the viewer on node A (1280×800), the viewer served by edge C (1280×800 and 360 px),
// and at 360 px after the move.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOM = 'cluster-live';
const SECRET = 'e2e-cluster-secret';
const HEARTBEAT_MS = 300;
const CASCADE_SECRET = 'e2e-cluster-cascade-secret-of-32-bytes+';

export async function cluster(h) {
  const { browser, check, until, sleep, shot, bin, freePort } = h;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-e2e-cluster-'));
  const redisPort = await freePort();
  const redis = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(redisPort), '--save', '', '--appendonly', 'no', '--dir', data],
    { stdio: ['ignore', 'ignore', 'inherit'] });
  const nodes = {};
  const startNode = async (id, extraEnv = {}) => {
    const [port, adminPort] = [await freePort(), await freePort()];
    const dir = path.join(data, id);
    fs.mkdirSync(dir);
    const child = spawn(bin, ['--dev', '--http-bind', `127.0.0.1:${port}`, '--udp-bind', '127.0.0.1:0', '--admin-bind', `127.0.0.1:${adminPort}`], {
      cwd: dir,
      env: { ...process.env, ONAIR_AUTH_SECRET: SECRET, RUST_LOG: process.env.RUST_LOG || 'warn,rtc_dtls=error',
        ONAIR_RTMP_ENABLED: 'false', ONAIR_ARCHIVE_RECORD: 'false', ONAIR_STORE_URL: `sqlite:${path.join(dir, 'onair.db')}`,
        ONAIR_REDIS_URL: `redis://127.0.0.1:${redisPort}`, ONAIR_NODE_ID: id, ONAIR_CLUSTER_HEARTBEAT_MS: String(HEARTBEAT_MS),
        ONAIR_IDLE_TIMEOUT_SECS: '15', ONAIR_HTTP_THREAD_NICE: '0', ...extraEnv },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    nodes[id] = { child, base: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/ws` };
    return nodes[id];
  };
  const contexts = [];
  const open = async (label, node, identity, role, viewport = { width: 1280, height: 800 }) => {
    const context = await browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
    contexts.push(context);
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error(`[${label}] page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error' || process.env.E2E_LOG_ALL === label) console.error(`[${label}] ${m.text()}`); });
    const q = new URLSearchParams({ room: ROOM, identity, role, name: identity });
    const r = await fetch(`${node.base}/api/dev/token?${q}`);
    if (!r.ok) throw new Error(`token for ${identity}: ${r.status}`);
    const { token } = await r.json();
    await page.goto(`${node.base}/?token=${encodeURIComponent(token)}&capture=360`);
    return page;
  };
  const wsUrl = (page) => page.evaluate(() => window.__onair.state.link.wsUrl);
  const joins = (page) => page.evaluate(() => window.__onair.joins());

  try {
    // Node A first: it is registered before the host's join claims the live for it.
    const a = await startNode('a', { ONAIR_CLUSTER_SECRET: CASCADE_SECRET });
    await until('node a', async () => (await fetch(`${a.base}/healthz`)).ok, 15_000);
    const b = await startNode('b');
    await until('node b', async () => (await fetch(`${b.base}/healthz`)).ok, 15_000);

    const host = await open('cluster-host', a, 'cluster-host', 'host');
    await until('the host joined at node a', async () => (await joins(host)) >= 1, 15_000);
    await host.click('#go-live');
    await until('the host publishing', async () => (await host.evaluate(() => window.__onair.outbound())).some((o) => o.bytesSent > 0), 20_000);

    const viewer = await open('cluster-viewer', b, 'cluster-viewer', 'viewer');
    await until('the viewer joined', async () => (await joins(viewer)) >= 1, 15_000);
    const sentTo = await wsUrl(viewer);
    check('cluster: a page loaded from node b is sent to node a, where the live runs (redirect, then joined there)', sentTo === a.ws, `WebSocket at ${sentTo}, node a is ${a.ws}`);
    const playing = await until('the viewer decoding the host', async () => {
      const v = (await viewer.evaluate(() => window.__onair.inbound())).find((s) => s.kind === 'video');
      return v && v.framesDecoded > 10 ? v : null;
    }, 20_000).catch((e) => ({ error: e.message }));
    const tiles = await viewer.evaluate(() => window.__onair.tiles());
    check('cluster: the redirected viewer plays the host (frames decoded, the host\'s tile)', playing.framesDecoded > 10 && tiles.some((t) => t.startsWith('cluster-host')),
      `${JSON.stringify(playing)}; tiles ${JSON.stringify(tiles)}`);
    const conn = await viewer.evaluate(() => window.__onair.connText());
    check('cluster: no error shown after the redirect', !/error|offline|reconnecting/i.test(conn), `status "${conn}"`);
    await shot(viewer, 'cluster-viewer-on-node-a.png');

    // Node C, with the cascade on: its viewer is served there.
    const c = await startNode('c', { ONAIR_CLUSTER_SECRET: CASCADE_SECRET });
    await until('node c', async () => (await fetch(`${c.base}/healthz`)).ok, 15_000);
    const edgeViewer = await open('cluster-edge-viewer', c, 'cluster-edge-viewer', 'viewer');
    await until('the edge viewer joined', async () => (await joins(edgeViewer)) >= 1, 15_000);
    const edgePlaying = await until('the edge viewer decoding the host', async () => {
      const v = (await edgeViewer.evaluate(() => window.__onair.inbound())).find((s) => s.kind === 'video');
      return v && v.framesDecoded > 10 ? v : null;
    }, 20_000).catch((e) => ({ error: e.message }));
    const [edgeUrl, edgeTiles] = [await wsUrl(edgeViewer), await edgeViewer.evaluate(() => window.__onair.tiles())];
    check('cluster: with the cascade, a page loaded from node c stays on c and plays the host relayed from node a',
      edgeUrl === null && edgePlaying.framesDecoded > 10 && edgeTiles.some((t) => t.startsWith('cluster-host')),
      `WebSocket at ${edgeUrl ?? 'its own server'}; ${JSON.stringify(edgePlaying)}; tiles ${JSON.stringify(edgeTiles)}`);
    const hello = 'hello from the edge';
    await edgeViewer.fill('#composer-text', hello);
    await edgeViewer.press('#composer-text', 'Enter');
    const heard = await until('the edge viewer\'s comment on the host page', async () =>
      (await host.evaluate(() => window.__onair.comments())).some((t) => t.endsWith(hello)), 5000).then(() => true, () => false);
    check('cluster: a comment from the edge viewer shows on the host\'s page on node a', heard,
      JSON.stringify(await host.evaluate(() => window.__onair.comments())));
    // The host's voice plays too (a stream's audio and video are one participant's: the edge's
    // offer names the host as their owner, as the origin's does).
    const voice = await until('the edge viewer playing the host\'s audio', async () => {
      const a = (await edgeViewer.evaluate(() => window.__onair.inbound())).find((s) => s.kind === 'audio');
      return a && a.totalSamplesReceived > 48_000 ? a : null;
    }, 10_000).catch((e) => ({ error: e.message }));
    check('cluster: the edge viewer plays the host\'s audio', voice.totalSamplesReceived > 48_000, JSON.stringify(voice));
    await shot(edgeViewer, 'cluster-edge-viewer-on-node-c.png');
    await edgeViewer.setViewportSize({ width: 360, height: 740 });
    await sleep(300);
    await shot(edgeViewer, 'cluster-edge-viewer-on-node-c-360.png');
    await edgeViewer.context().close();

    // Node A dies: the page falls back to node b, which takes the live over.
    const before = await joins(viewer);
    await viewer.setViewportSize({ width: 360, height: 740 });
    a.child.kill('SIGKILL');
    const killed = Date.now();
    const back = await until('the viewer joined again through node b', async () => {
      const [n, url] = [await joins(viewer), await wsUrl(viewer)];
      return n > before && url === null ? Date.now() - killed : null;
    }, 15_000).catch((e) => ({ error: e.message }));
    check('cluster: node a killed — the page goes back to node b and joins the live there within 5 s', typeof back === 'number' && back < 5000,
      typeof back === 'number' ? `joined again ${back} ms after the kill (heartbeat ${HEARTBEAT_MS} ms)` : JSON.stringify(back));
    await sleep(500);
    await shot(viewer, 'cluster-viewer-moved-360.png');
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    for (const n of Object.values(nodes)) n.child.kill('SIGKILL');
    redis.kill('SIGKILL');
    fs.rmSync(data, { recursive: true, force: true });
  }
}
