// The "whep" scenario of e2e.mjs (issue #18): a live with a browser host and a WHIP feed, played
// by a WHEP player we did not write — the `whip-whep` npm package's WHEPClient (pinned in
// package-lock.json) in Chromium — and by the room page; the glass-to-glass delay WHIP → WHEP;
// then the embed page in an iframe of an allowed parent origin (plays) and of another (refused).
//
// The WHIP encoder publishes a canvas that shows the time it was drawn as two rows of blocks
// (24 bits of Date.now() and their complement); the WHEP player reads them back from each frame
// it presents (requestVideoFrameCallback). Both pages run in one browser: one clock.
//
// The encoder's and the player's pages are served on the server's origin by Playwright (route),
// not by Onair. The parent pages of the embed are a partner's site: a real HTTP server on
// another loopback address (127.0.0.2, the allowed origin) and the same page on a third
// (127.0.0.3, not allowed) — real origins, so Chromium applies frame-ancestors (and Private
// Network Access) as it would on the web.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const BITS = 24;

const STUDIO_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>WHIP encoder (time code)</title></head>
<body style="font:16px sans-serif;margin:16px;background:#fff">
<canvas id="c" width="640" height="360" style="width:480px;border:1px solid #888"></canvas>
<p id="status">idle</p>
<script type="module">
import { WHIPClient } from './whip.js';
const BITS = ${BITS};
const c = document.getElementById('c');
const g = c.getContext('2d');
let frame = 0;
// Each frame: a moving bar (so the encoder has motion), and the time it was drawn in two rows of
// blocks — the low 24 bits of Date.now(), then their complement (a check on the reading).
const draw = () => {
  const now = Date.now() & 0xffffff;
  g.fillStyle = '#4a5568'; g.fillRect(0, 0, 640, 360);
  g.fillStyle = '#f6ad55'; g.fillRect((frame * 8) % 640, 200, 60, 120);
  const w = 640 / BITS;
  for (let i = 0; i < BITS; i += 1) {
    const bit = (now >> (BITS - 1 - i)) & 1;
    g.fillStyle = bit ? '#fff' : '#000'; g.fillRect(i * w, 0, w, 80);
    g.fillStyle = bit ? '#000' : '#fff'; g.fillRect(i * w, 90, w, 80);
  }
  frame += 1;
};
setInterval(draw, 1000 / 30);
draw();
window.publishWhip = async (room, key) => {
  const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
  const stream = new MediaStream([...c.captureStream(30).getVideoTracks(), ...mic.getAudioTracks()]);
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  window.client = new WHIPClient();
  await window.client.publish(pc, location.origin + '/whip/' + encodeURIComponent(room), key);
  document.getElementById('status').textContent = 'published: ' + window.client.resourceURL.pathname;
  return window.client.resourceURL.pathname;
};
</script>
</body></html>`;

const PLAYER_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>WHEP player (whip-whep)</title></head>
<body style="font:16px sans-serif;margin:16px;background:#111;color:#eee">
<h1 style="font-size:18px">WHEP player — whip-whep's WHEPClient, two seats</h1>
<div style="display:flex;gap:8px">
  <video id="v0" autoplay muted playsinline style="width:480px;background:#000"></video>
  <video id="v1" autoplay muted playsinline style="width:480px;background:#000"></video>
</div>
<p id="status">idle</p>
<canvas id="read" width="640" height="360" hidden></canvas>
<script type="module">
import { WHEPClient } from './whep.js';
const BITS = ${BITS};
window.delays = [];
window.view = async (room, token, seats) => {
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  const slots = [];
  for (let i = 0; i < seats; i += 1) {
    const a = pc.addTransceiver('audio', { direction: 'recvonly' });
    const v = pc.addTransceiver('video', { direction: 'recvonly' });
    slots.push({ a, v });
    const el = document.getElementById('v' + i);
    if (el) el.srcObject = new MediaStream([v.receiver.track, a.receiver.track]);
  }
  window.pc = pc;
  window.client = new WHEPClient();
  const started = performance.now();
  await window.client.view(pc, location.origin + '/whep/' + encodeURIComponent(room), token);
  document.getElementById('status').textContent = 'viewing: ' + window.client.resourceURL.pathname;
  return { ms: Math.round(performance.now() - started), resource: window.client.resourceURL.pathname, mids: slots.map((s) => [s.a.mid, s.v.mid]) };
};
// Read the time code of every frame slot i presents; keep the delay when both rows agree.
window.readTimeCode = (i) => {
  const el = document.getElementById('v' + i);
  const g = document.getElementById('read').getContext('2d', { willReadFrequently: true });
  const onFrame = () => {
    const now = Date.now() & 0xffffff;
    if (el.videoWidth > 0) {
      g.drawImage(el, 0, 0, 640, 360);
      let code = 0, ok = true;
      for (let b = 0; b < BITS; b += 1) {
        const x = Math.floor((b + 0.5) * 640 / BITS);
        const top = g.getImageData(x, 40, 1, 1).data[1] > 128;
        const bottom = g.getImageData(x, 130, 1, 1).data[1] > 128;
        if (top === bottom) { ok = false; break; }
        code = (code << 1) | (top ? 1 : 0);
      }
      if (ok) {
        const d = (now - code + 0x1000000) % 0x1000000;
        if (d < 5000) window.delays.push(d);
      }
    }
    el.requestVideoFrameCallback(onFrame);
  };
  el.requestVideoFrameCallback(onFrame);
};
window.videoStats = async () => {
  const out = {};
  (await window.pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp') out[r.mid] = { kind: r.kind, frames: r.framesDecoded ?? null, packets: r.packetsReceived, energy: r.totalAudioEnergy ?? null, height: r.frameHeight ?? null, mime: null, codecId: r.codecId };
  });
  return { conn: window.pc.connectionState, mids: out };
};
</script>
</body></html>`;

const parentPage = (src) => `<!doctype html>
<html><head><meta charset="utf-8"><title>Partner shop</title></head>
<body style="font:16px sans-serif;margin:0;padding:12px;background:#f4f1ea;color:#222">
<h1 style="font-size:18px;margin:0 0 8px">Spring collection — watch the live</h1>
<iframe id="live" src="${src}" allow="autoplay" style="width:100%;max-width:640px;aspect-ratio:16/9;border:0;border-radius:8px;background:#000"></iframe>
<p>Shop the looks below the player.</p>
</body></html>`;

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : null; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : null; };

export async function whep(h) {
  const { browser, open, token, check, until, sleep, shot, base, decoding, tiles, root, embedRoom, allowedOrigin } = h;
  const room = embedRoom;
  const contexts = [];
  const sites = [];
  try {
    // The browser host goes live and mints a stream key for the WHIP encoder.
    const host = await open('whep-host', await token(room, 'ehost', 'host', 'Erin Host'));
    await until('the WHEP scenario\'s host joined', () => host.evaluate(() => window.__onair.joins() >= 1), 10_000);
    await host.click('#go-live');
    await until('the host on stage', async () => (await tiles(host)).length === 1, 10_000);
    await host.click('#studio');
    await host.fill('#studio-label', 'Time code cam');
    await host.click('#studio-create');
    const key = await until('a stream key shown', () => host.inputValue('#studio-key'), 5000);
    await host.click('#studio-close');

    const whipJs = fs.readFileSync(path.join(root, 'web-client/node_modules/whip-whep/whip.js'));
    const whepJs = fs.readFileSync(path.join(root, 'web-client/node_modules/whip-whep/whep.js'));
    const serve = async (ctx, dir, page) => ctx.route(`${base}/${dir}/**`, (route) => {
      const url = new URL(route.request().url());
      if (url.pathname.endsWith('/whip.js')) return route.fulfill({ status: 200, contentType: 'text/javascript', body: whipJs });
      if (url.pathname.endsWith('/whep.js')) return route.fulfill({ status: 200, contentType: 'text/javascript', body: whepJs });
      return route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: page });
    });
    const newPage = async (label, ctx) => {
      const p = await ctx.newPage();
      p.on('pageerror', (e) => console.error(`[${label}] page error: ${e.message}`));
      p.on('console', (m) => { if (m.type() === 'error') console.error(`[${label}] ${m.text()}`); });
      return p;
    };

    // The WHIP encoder (canvas with the time code, fake microphone).
    const studioCtx = await browser.newContext({ viewport: { width: 800, height: 560 }, permissions: ['microphone'] });
    contexts.push(studioCtx);
    await serve(studioCtx, 'e2e-encoder', STUDIO_PAGE);
    const studio = await newPage('whep-encoder', studioCtx);
    await studio.goto(`${base}/e2e-encoder/index.html`);
    const published = await studio.evaluate(([r, k]) => window.publishWhip(r, k), [room, key]).catch((e) => `error: ${e.message}`);
    check('WHEP: the WHIP encoder (whip-whep) publishes a time-code canvas into the live', published.startsWith(`/whip/${room}/`), published);

    // The room page plays both seats.
    const viewer = await open('whep-viewer', await token(room, 'eviewer', 'viewer', 'Eli Viewer'));
    const phone = await open('whep-phone', await token(room, 'ephone', 'viewer', 'Pam Phone'), { width: 360, height: 740 });
    const both = await until('the room page decoding both seats', () => decoding(viewer, 2), 20_000).catch(() => null);
    check('WHEP: the room page plays both the browser host and the WHIP feed', !!both, JSON.stringify(both?.map((r) => [r.kind, r.framesDecoded ?? r.packetsReceived])));

    // The WHEP player (whip-whep's WHEPClient) with two seats.
    const playerCtx = await browser.newContext({ viewport: { width: 1000, height: 460 } });
    contexts.push(playerCtx);
    await serve(playerCtx, 'e2e-player', PLAYER_PAGE);
    const player = await newPage('whep-player', playerCtx);
    await player.goto(`${base}/e2e-player/index.html`);
    const posted = Date.now();
    const viewing = await player.evaluate(([r, t]) => window.view(r, t, 2), [room, await token(room, 'eplayer', 'viewer', 'TV Player')])
      .catch((e) => ({ error: e.message }));
    check('WHEP: whip-whep\'s WHEPClient is answered (201, Location)', !viewing.error && viewing.resource?.startsWith(`/whep/${room}/`), JSON.stringify(viewing));
    const playing = async () => {
      const s = await player.evaluate(() => window.videoStats());
      const video = Object.values(s.mids).filter((m) => m.kind === 'video' && m.frames > 0);
      const audio = Object.values(s.mids).filter((m) => m.kind === 'audio' && m.packets > 0);
      return video.length >= 2 && audio.length >= 2 ? s : null;
    };
    const first = await until('the WHEP player decoding both seats', playing, 20_000).catch(() => null);
    const firstMs = Date.now() - posted;
    await sleep(1500);
    const later = await player.evaluate(() => window.videoStats());
    const grew = first && Object.entries(later.mids).filter(([, m]) => m.kind === 'video').every(([mid, m]) => m.frames > (first.mids[mid]?.frames ?? 0));
    check('WHEP: the WHEP player plays both seats (video frames decoded and increasing, audio packets)', !!first && grew,
      `first frames ${firstMs} ms after the POST; ${JSON.stringify(later)}`);

    // Glass to glass, WHIP → WHEP: the second seat is the WHIP encoder (the host's is first).
    await player.evaluate(() => window.readTimeCode(1));
    await until('100 time codes read', () => player.evaluate(() => window.delays.length >= 100), 15_000).catch(() => null);
    const delays = await player.evaluate(() => window.delays);
    const p50 = median(delays);
    console.log(`WHIP → WHEP glass to glass: p50 ${p50} ms, p95 ${pct(delays, 0.95)} ms, min ${Math.min(...delays)} ms over ${delays.length} frames`);
    check('WHEP: glass-to-glass WHIP → WHEP measured, sub-second (p50 < 1000 ms)', delays.length >= 100 && p50 !== null && p50 < 1000,
      `p50 ${p50} ms, p95 ${pct(delays, 0.95)} ms over ${delays.length} frames`);
    await shot(player, 'whep-player.png');
    await shot(viewer, 'whep-viewer.png');
    await until('the phone decoding', () => decoding(phone, 2), 10_000).catch(() => null);
    await shot(phone, 'whep-viewer-360.png');
    await shot(studio, 'whep-encoder.png');

    // The embed page in an iframe: on the allowed origin it plays (muted, LIVE, tap to unmute);
    // on another origin Chromium refuses to show it (frame-ancestors).
    const embedSrc = `${base}/embed/${encodeURIComponent(room)}?v=1#token=${encodeURIComponent(await token(room, 'eembed', 'viewer', 'Embed'))}`;
    const port = Number(new URL(allowedOrigin).port);
    const otherOrigin = `http://127.0.0.3:${port}`;
    for (const host of ['127.0.0.2', '127.0.0.3']) {
      const site = http.createServer((req, res) => { res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }); res.end(parentPage(embedSrc)); });
      await new Promise((resolve, reject) => { site.once('error', reject); site.listen(port, host, resolve); });
      sites.push(site);
    }
    for (const [origin, label, wide] of [[allowedOrigin, 'embed-allowed', 1000], [allowedOrigin, 'embed-allowed-360', 360], [otherOrigin, 'embed-refused', 1000]]) {
      const ctx = await browser.newContext({ viewport: { width: wide, height: wide === 360 ? 740 : 700 } });
      contexts.push(ctx);
      const parent = await newPage(label, ctx);
      const refusals = [];
      parent.on('console', (m) => { if (/frame-ancestors/.test(m.text())) refusals.push(m.text()); });
      await parent.goto(`${origin}/shop.html`);
      const frame = () => parent.frames().find((f) => f !== parent.mainFrame());
      if (origin === allowedOrigin) {
        const seen = await until(`the embed playing on ${label}`, async () => {
          const t = await frame()?.evaluate(() => window.__embed?.tiles()).catch(() => null);
          return t && t.length >= 2 && t.every((x) => x.frames > 0) ? t : null;
        }, 20_000).catch(() => null);
        const st = await frame()?.evaluate(() => window.__embed.state()).catch(() => null);
        const badge = await frame()?.evaluate(() => !document.getElementById('live').hidden && !document.getElementById('unmute').hidden).catch(() => false);
        check(`WHEP: the embed in an iframe on the allowed origin plays both seats, muted, LIVE badge and "Tap to unmute" shown (${wide} px)`,
          !!seen && st?.muted === true && badge, `${JSON.stringify(seen)} ${JSON.stringify(st)}`);
        await sleep(500);
        await shot(parent, `${label}.png`);
        if (wide !== 360) {
          await frame()?.click('#unmute').catch(() => {});
          const unmuted = await until('the embed unmuted', () => frame()?.evaluate(() => !window.__embed.state().muted && window.__embed.tiles().every((t) => !t.muted)), 3000).catch(() => false);
          check('WHEP: a tap on the embed unmutes it', !!unmuted);
        }
      } else {
        await sleep(3000);
        const inside = await frame()?.evaluate(() => !!window.__embed).catch(() => false);
        const url = frame()?.url() ?? '';
        check('WHEP: the embed in an iframe on another origin is refused (frame-ancestors)', !inside,
          `frame ${url}; ${refusals[0]?.slice(0, 160) ?? 'no console message'}`);
        await shot(parent, `${label}.png`);
      }
    }
    await player.evaluate(() => window.client.stop()).catch(() => {});
    await studio.evaluate(() => window.client.stop()).catch(() => {});
    for (const p of [host, viewer, phone]) await p.context().close();
  } catch (e) {
    check('WHEP scenario ran to the end', false, e.message);
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    for (const s of sites) s.close();
  }
}
