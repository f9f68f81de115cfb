// The "whip" scenario of e2e.mjs (issue #18): a WHIP publisher we did not write — the
// `whip-whep` npm package (medooze's WHIPClient, by an author of the WHIP RFC), pinned in
// package-lock.json — runs in Chromium with the fake camera and microphone and publishes into a
// live room with a stream key the host minted on the page. The room's viewer page plays it as a
// studio feed; an ICE restart over PATCH keeps it playing; stop() (DELETE) takes it off stage.
//
// The publishing page is served on the server's origin by Playwright (route), not by Onair: it
// is the encoder's page, not ours.

import fs from 'node:fs';
import path from 'node:path';

const STUDIO_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>WHIP studio (whip-whep)</title></head>
<body style="font:16px sans-serif;margin:16px">
<h1 style="font-size:18px">WHIP studio — whip-whep's WHIPClient</h1>
<video id="preview" autoplay muted playsinline style="width:320px;background:#000"></video>
<p id="status">idle</p>
<script type="module">
import { WHIPClient } from './whip.js';
const status = (s) => { document.getElementById('status').textContent = s; };
window.publishWhip = async (room, key) => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360, frameRate: 30 } });
  document.getElementById('preview').srcObject = stream;
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  window.pc = pc;
  window.client = new WHIPClient();
  const started = performance.now();
  await window.client.publish(pc, location.origin + '/whip/' + encodeURIComponent(room), key);
  status('published: ' + window.client.resourceURL.pathname);
  return { ms: Math.round(performance.now() - started), resource: window.client.resourceURL.pathname, etag: window.client.etag };
};
window.sentFrames = async () => {
  const stats = await window.pc.getStats();
  let frames = 0, bytes = 0, pair = null;
  stats.forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') { frames += r.framesSent || 0; bytes += r.bytesSent || 0; }
    if (r.type === 'transport') pair = r.selectedCandidatePairId;
  });
  return { frames, bytes, pair, state: window.pc.connectionState, ice: window.pc.iceConnectionState };
};
</script>
</body></html>`;

export async function whip(h) {
  const { browser, open, token, check, until, sleep, shot, base, decoding, inbound, tiles, root } = h;
  const room = 'whip-studio';
  const contexts = [];
  try {
    const host = await open('whip-host', await token(room, 'whost', 'host', 'Wendy Host'));
    await until('the WHIP host joined', () => host.evaluate(() => window.__onair.joins() >= 1), 10_000);
    await host.click('#studio');
    await host.fill('#studio-label', 'WHIP Camera');
    await host.click('#studio-create');
    const key = await until('a stream key shown', () => host.inputValue('#studio-key'), 5000);
    await host.click('#studio-close');
    const viewer = await open('whip-viewer', await token(room, 'wviewer', 'viewer', 'Walt Viewer'));
    const phone = await open('whip-phone', await token(room, 'wphone', 'viewer', 'Pia Phone'), { width: 360, height: 740 });

    // The encoder's page, on the server's origin.
    const studioCtx = await browser.newContext({ viewport: { width: 800, height: 600 }, permissions: ['camera', 'microphone'] });
    contexts.push(studioCtx);
    const whipJs = fs.readFileSync(path.join(root, 'web-client/node_modules/whip-whep/whip.js'));
    await studioCtx.route(`${base}/e2e-studio/**`, (route) => {
      const url = new URL(route.request().url());
      if (url.pathname.endsWith('/whip.js')) return route.fulfill({ status: 200, contentType: 'text/javascript', body: whipJs });
      return route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: STUDIO_PAGE });
    });
    const studio = await studioCtx.newPage();
    studio.on('pageerror', (e) => console.error(`[whip-studio] page error: ${e.message}`));
    studio.on('console', (m) => { if (m.type() === 'error') console.error(`[whip-studio] ${m.text()}`); });
    await studio.goto(`${base}/e2e-studio/index.html`);
    const posted = Date.now();
    const published = await studio.evaluate(([r, k]) => window.publishWhip(r, k), [room, key]).catch((e) => ({ error: e.message }));
    check('WHIP: whip-whep\'s WHIPClient publishes with the stream key (201, Location, ETag)',
      !published.error && published.resource?.startsWith(`/whip/${room}/`) && !!published.etag, JSON.stringify(published));

    const playing = await until('the viewer decoding the WHIP feed', () => decoding(viewer, 1), 20_000).catch(() => null);
    const firstFrameMs = Date.now() - posted;
    await sleep(2000);
    const later = await inbound(viewer);
    const v0 = playing?.find((r) => r.kind === 'video');
    const v1 = later.find((r) => r.kind === 'video');
    const a1 = later.find((r) => r.kind === 'audio');
    check('WHIP: a viewer page plays the feed (video frames decoded and increasing, Opus audio with energy)',
      !!v0 && v1?.framesDecoded > v0.framesDecoded && a1?.totalAudioEnergy > 0,
      `first frame ${firstFrameMs} ms after the POST; ${v1?.mimeType} ${v1?.frameHeight}p framesDecoded ${v0?.framesDecoded} -> ${v1?.framesDecoded}; ${a1?.mimeType} energy ${a1?.totalAudioEnergy?.toFixed(3)}`);
    const t = await tiles(viewer);
    check('WHIP: the feed is on stage under its label, as a studio feed', t.some((x) => x.includes('WHIP Camera')), JSON.stringify(t));
    const stats = await (await fetch(`${base}/api/stats`)).json();
    const feed = stats.studio?.find((f) => f.label === 'WHIP Camera');
    check('WHIP: /api/stats lists the feed with transport "whip", connected', feed?.transport === 'whip' && feed.connected === true, JSON.stringify(feed));
    await until('the phone decoding', () => decoding(phone, 1), 10_000).catch(() => null);
    await shot(viewer, 'whip-viewer.png');
    await shot(phone, 'whip-viewer-360.png');
    await shot(host, 'whip-host.png');
    await shot(studio, 'whip-studio.png');

    // An ICE restart from the encoder (PATCH, If-Match: *): new credentials both ways, the feed
    // keeps playing.
    const before = (await inbound(viewer)).find((r) => r.kind === 'video')?.framesDecoded ?? 0;
    const sentBefore = await studio.evaluate(() => window.sentFrames());
    const restarted = await studio.evaluate(async () => {
      const tag = window.client.etag;
      await window.client.restart();
      return { changed: window.client.etag !== tag, etag: window.client.etag };
    }).catch((e) => ({ error: e.message }));
    await sleep(2500);
    const sent = await studio.evaluate(() => window.sentFrames());
    const afterStats = (await inbound(viewer)).find((r) => r.kind === 'video');
    const detail = await viewer.evaluate(async () => {
      const out = [];
      (await window.__onair.state.subscriber.pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video') out.push({ ssrc: r.ssrc, recv: r.framesReceived, dec: r.framesDecoded, key: r.keyFramesDecoded, nack: r.nackCount, pli: r.pliCount, lost: r.packetsLost, pkts: r.packetsReceived, w: r.frameWidth });
      });
      return out;
    });
    const after = afterStats?.framesDecoded ?? 0;
    check('WHIP: an ICE restart over PATCH (If-Match: *) gets a new ETag and the viewer keeps decoding',
      !restarted.error && restarted.changed && sent.state === 'connected' && after > before + 30,
      `${JSON.stringify(restarted)}; encoder ${JSON.stringify(sentBefore)} -> ${JSON.stringify(sent)}; viewer frames ${before} -> ${after} ${JSON.stringify(detail)}`);

    // stop(): DELETE; the feed leaves the stage.
    await studio.evaluate(() => window.client.stop());
    const gone = await until('the WHIP feed off stage', async () => !(await tiles(viewer)).some((x) => x.includes('WHIP Camera')), 5000).then(() => true).catch(() => false);
    check('WHIP: stop() (DELETE) takes the feed off stage', gone, JSON.stringify(await tiles(viewer)));
  } catch (e) {
    check('WHIP scenario ran to the end', false, e.message);
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
  }
}
