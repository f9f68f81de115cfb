// The "archive" scenario of e2e.mjs (issue #14, recording and the archive): a server of its own
// records every live (ONAIR_ARCHIVE_RECORD=true; ffmpeg builds the stage video). A host page
// goes live, a co-host page takes a seat, and ffmpeg pushes a studio feed over RTMP; all three
// run for 60 s, then the host ends the live on the page. Once the entry is `ready`:
//
// - it has the three raw files, each downloadable over its signed link (200; a range is 206;
//   a tampered signature 403; an expired or missing one 401/403);
// - each raw file decodes end to end with ffprobe, and holds within 2 % of the video frames its
//   publisher sent (the browsers: `framesSent` of the top simulcast layer, read just before the
//   end; the studio feed: the frames ffmpeg says it sent) and an audio stream;
// - the stage video plays in Chromium from the host's Archive panel (Play): frames, time moving;
//   at 30 s the three publishers are in the frame (a 2×2 grid, the third tile centred below);
//   screenshots at 1280×800 and 360 px;
// - Download carries `download=1` (the server answers `attachment`); Delete (confirmed) removes
//   the entry from the panel and the API (404), and its files.
//
// The pages capture 640×360 (`&capture=360`) to spare a small machine's CPU: Chromium then sends
// two layers, 90p and 180p (the third, `f`, stays silent), so the top layer sent — and recorded —
// is 180p. E2E_ARCHIVE_CAPTURE=720 uses the page's default 720p capture instead (top layer 720p;
// two pages encoding three layers each want more than two cores). Needs ffmpeg and ffprobe (./test.sh
// installs them).

import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const ROOM = 'archived';
const API_KEY = 'e2e-archive-api-key-0123456789';
const LIVE_SECS = 60;
const HOST = { identity: 'arc-host', name: 'Ann Host' };
const COHOST = { identity: 'arc-cohost', name: 'Bob Cohost' };
// The colour the stage video's empty space is painted (signaling/src/archive/compose.rs).
const BACKGROUND = [0x16, 0x18, 0x1d];
const CAPTURE = process.env.E2E_ARCHIVE_CAPTURE === '720' ? '' : '&capture=360';

// A command's output, bounded in time; `code` 0 when it succeeded.
const run = (cmd, args, ms) => new Promise((resolve) => {
  execFile(cmd, args, { timeout: ms, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
    resolve({ code: err ? (err.code ?? err.signal ?? 'failed') : 0, stdout: String(stdout), stderr: String(stderr) });
  });
});
const json = (text) => { try { return JSON.parse(text); } catch { return null; } };

export async function archive(h) {
  const { browser, check, until, sleep, shot, bin, freePort } = h;
  const [port, adminPort, rtmpPort] = [await freePort(), await freePort(), await freePort()];
  const base = `http://127.0.0.1:${port}`;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-e2e-archive-'));
  const downloads = path.join(data, 'downloads');
  fs.mkdirSync(downloads);
  const server = spawn(bin, ['--dev', '--http-bind', `127.0.0.1:${port}`, '--udp-bind', '127.0.0.1:0', '--admin-bind', `127.0.0.1:${adminPort}`], {
    env: { ...process.env, ONAIR_AUTH_SECRET: 'e2e-archive-secret', RUST_LOG: process.env.RUST_LOG || 'warn,rtc_dtls=error',
      ONAIR_RTMP_BIND: `127.0.0.1:${rtmpPort}`, ONAIR_RTMP_KEYS_FILE: path.join(data, 'keys.json'),
      ONAIR_IDLE_TIMEOUT_SECS: '15', ONAIR_STORE_URL: `sqlite:${path.join(data, 'onair.db')}`, ONAIR_API_KEY: API_KEY,
      ONAIR_ARCHIVE_RECORD: 'true', ONAIR_ARCHIVE_DIR: path.join(data, 'archive'), ONAIR_FFMPEG: 'ffmpeg',
      // The browsers run on the server's machine here: signaling's threads keep their share of it
      // (a node runs alone; http.thread_nice lets its media threads win its cores).
      ONAIR_HTTP_THREAD_NICE: '0' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const contexts = [];
  let ffmpeg = null;
  const log = (text) => console.log(`[archive ${new Date().toISOString().slice(11, 19)}] ${text}`);

  // The server API with the key; the body as JSON when it is JSON.
  const api = async (method, p, body = undefined) => {
    const r = await fetch(`${base}${p}`, {
      method, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(15_000),
      headers: { Authorization: `Bearer ${API_KEY}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
    });
    return { status: r.status, json: json(await r.text()) };
  };
  // A status, the body read and dropped (no socket left waiting).
  const statusOf = async (url, headers = {}) => {
    const r = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
    await r.arrayBuffer().catch(() => {});
    return r.status;
  };

  const open = async (label, who, role, viewport = { width: 1280, height: 800 }) => {
    const context = await browser.newContext({ viewport, permissions: ['camera', 'microphone'] });
    contexts.push(context);
    const page = await context.newPage();
    page.on('pageerror', (e) => console.error(`[${label}] page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error' || process.env.E2E_LOG_ALL === label) console.error(`[${label}] ${m.text()}`); });
    const q = new URLSearchParams({ room: ROOM, identity: who.identity, role, name: who.name });
    const r = await fetch(`${base}/api/dev/token?${q}`);
    if (!r.ok) throw new Error(`token for ${who.identity}: ${r.status}`);
    const { token } = await r.json();
    await page.goto(`${base}/?token=${encodeURIComponent(token)}${CAPTURE}`);
    await until(`${label} joined`, () => page.evaluate(() => window.__onair?.joins() >= 1), 15_000);
    return page;
  };
  const outbound = (page) => page.evaluate(() => window.__onair.outbound());
  const sending = async (page) => (await outbound(page)).some((o) => o.bytesSent > 0);
  // The top simulcast layer: the outbound video stream with the largest frame height.
  const topLayer = (layers) => [...layers].filter((o) => o.framesSent > 0)
    .sort((a, b) => b.frameHeight - a.frameHeight || b.framesSent - a.framesSent)[0] ?? null;
  const layersText = (layers) => layers.map((o) => `${o.rid ?? '-'} ${o.frameHeight}p ${o.framesSent} sent${o.limit && o.limit !== 'none' ? ` (${o.limit})` : ''}`).join(', ');

  try {
    await until('the archive scenario\'s server', async () => (await fetch(`${base}/healthz`)).ok, 15_000);

    // ---- The live: host, co-host, studio feed ----
    const host = await open('archive-host', HOST, 'host');
    await host.click('#go-live');
    await until('the host publishing', () => sending(host), 20_000);
    const cohost = await open('archive-cohost', COHOST, 'cohost');
    await cohost.click('#go-live');
    await until('the co-host publishing', () => sending(cohost), 20_000);

    const minted = await api('POST', `/api/v1/rooms/${ROOM}/stream-keys`, { label: 'Studio', seat: 'cohost' });
    const key = minted.json?.key;
    if (!key) throw new Error(`no stream key: ${minted.status} ${JSON.stringify(minted.json)}`);
    // The frames ffmpeg sent: its -progress report (the last `frame=`).
    const progress = { frame: 0, ended: false, errors: '' };
    ffmpeg = spawn('ffmpeg', ['-hide_banner', '-nostdin', '-loglevel', 'error', '-nostats', '-progress', 'pipe:1', '-re',
      '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', String(LIVE_SECS), '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-pix_fmt', 'yuv420p',
      '-c:a', 'aac', '-f', 'flv', `rtmp://127.0.0.1:${rtmpPort}/live/${key}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let pending = '';
    ffmpeg.stdout.on('data', (d) => {
      pending += d;
      for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
        const line = pending.slice(0, i).trim();
        pending = pending.slice(i + 1);
        const m = /^frame=(\d+)$/.exec(line);
        if (m) progress.frame = Number(m[1]);
        if (line === 'progress=end') progress.ended = true;
      }
    });
    ffmpeg.stderr.on('data', (d) => { progress.errors = (progress.errors + d).slice(-2000); });
    const ffmpegExit = new Promise((resolve) => ffmpeg.on('exit', (code, signal) => resolve({ code, signal })));
    const feedStarted = Date.now();
    const three = await until('three publishers on the host\'s stage', async () => {
      const t = await host.evaluate(() => window.__onair.tiles());
      return t.length === 3 ? t : null;
    }, 30_000).catch((e) => ({ error: e.message }));
    check('archive: host, co-host and the studio feed are on stage (three tiles on the host\'s page)', Array.isArray(three), JSON.stringify(three));
    log(`host, co-host and studio feed live: ${LIVE_SECS} s…`);

    // ffmpeg stops by itself after LIVE_SECS of output (-t); the pages have run a few seconds more.
    const exit = await Promise.race([ffmpegExit, sleep((LIVE_SECS + 45) * 1000).then(() => null)]);
    if (!exit) ffmpeg.kill('SIGKILL');
    const studioFrames = progress.frame;
    log(`ffmpeg ${exit ? `exited (${exit.code ?? exit.signal})` : 'did not stop: killed'} after ${((Date.now() - feedStarted) / 1000).toFixed(1)} s, `
      + `${studioFrames} video frames sent${progress.ended ? '' : ' (no progress=end)'}${progress.errors ? `; it said: ${progress.errors.trim()}` : ''}`);
    check(`archive: the studio feed (ffmpeg) ran its ${LIVE_SECS} s`, exit?.code === 0 && progress.ended && studioFrames > 0, `${studioFrames} frames`);

    // Just before the end: what each browser sent on its top layer. Then the host ends the live.
    const [hostLayers, cohostLayers] = await Promise.all([outbound(host), outbound(cohost)]);
    await host.click('#end-live');
    const endedAt = Date.now();
    const hostTop = topLayer(hostLayers);
    const cohostTop = topLayer(cohostLayers);
    log(`host layers: ${layersText(hostLayers)}; co-host layers: ${layersText(cohostLayers)}`);

    // ---- The entry, once its video is built ----
    let lastState = null;
    let lastSaid = 0;
    const entry = await until('the archive entry to settle (ready, raw_only or failed)', async () => {
      const r = await api('GET', `/api/v1/rooms/${ROOM}/archive`);
      const e = r.json?.entries?.[0];
      const state = e ? e.state : `no entry yet (${r.status}${r.json?.error ? ` ${r.json.error.code}` : ''})`;
      if (state !== lastState || Date.now() - lastSaid > 10_000) {
        log(`${((Date.now() - endedAt) / 1000).toFixed(0)} s after the end: ${state}`);
        lastState = state;
        lastSaid = Date.now();
      }
      if (e && ['ready', 'raw_only', 'failed'].includes(e.state)) return e;
      await sleep(1000);
      return null;
    }, 180_000);
    const settledSecs = (Date.now() - endedAt) / 1000;
    const raw = entry.raw ?? [];
    check('archive: the entry is ready after the live (the stage video built)', entry.state === 'ready' && !!entry.video?.url,
      `${entry.state}${entry.error ? ` (${entry.error})` : ''} ${settledSecs.toFixed(0)} s after the end; ${entry.id}, ${(entry.duration_ms / 1000).toFixed(1)} s long, `
      + `video ${entry.video ? `${entry.video.name} ${entry.video.bytes} B` : 'none'}, expires ${new Date(entry.expires_at).toISOString()}`);
    const byId = await api('GET', `/api/v1/archive/${entry.id}`);
    const all = await api('GET', '/api/v1/archive');
    check('archive: the API lists the entry (the room\'s list, every room\'s, by its id)',
      byId.status === 200 && byId.json?.id === entry.id && all.status === 200 && all.json?.entries?.some((e) => e.id === entry.id),
      `by id ${byId.status}, all rooms ${all.status} (${all.json?.entries?.length} entries)`);

    // ---- The raw files ----
    const roleOf = (f) => (f.identity === HOST.identity ? 'host' : f.identity === COHOST.identity ? 'co-host' : f.identity?.startsWith('studio') ? 'studio' : f.identity);
    check('archive: the entry has 3 raw files (host, co-host, studio feed)',
      raw.length === 3 && ['host', 'co-host', 'studio'].every((k) => raw.some((f) => roleOf(f) === k)),
      raw.map((f) => `${f.name} (${f.identity} "${f.name_shown}", ${f.video_codec} ${f.height}p, ${f.video_frames} video / ${f.audio_frames} audio frames, ${f.bytes} B)`).join('; '));
    const sent = {
      host: { frames: hostTop?.framesSent, how: `framesSent of its top layer ${hostTop?.rid ?? '-'} ${hostTop?.frameHeight}p` },
      'co-host': { frames: cohostTop?.framesSent, how: `framesSent of its top layer ${cohostTop?.rid ?? '-'} ${cohostTop?.frameHeight}p` },
      studio: { frames: studioFrames, how: 'ffmpeg\'s frame count' },
    };
    for (const f of raw) {
      const who = roleOf(f);
      const url = new URL(f.url, base);
      const local = path.join(downloads, f.name.replace(/[^A-Za-z0-9._-]/g, '_'));
      // The signed link alone (no Authorization), whole and as a range; refused when tampered
      // with, expired or missing.
      const whole = await fetch(url, { signal: AbortSignal.timeout(60_000) });
      const body = Buffer.from(await whole.arrayBuffer());
      fs.writeFileSync(local, body);
      const ranged = await fetch(url, { headers: { Range: 'bytes=0-99' }, signal: AbortSignal.timeout(30_000) });
      const rangedBody = Buffer.from(await ranged.arrayBuffer());
      const sig = url.searchParams.get('sig') ?? '';
      const tampered = new URL(url);
      tampered.searchParams.set('sig', `${sig[0] === '0' ? '1' : '0'}${sig.slice(1)}`);
      const expired = new URL(url);
      expired.searchParams.set('exp', String(Math.floor(Date.now() / 1000) - 60));
      const bare = new URL(url);
      bare.search = '';
      const [t, x, b] = [await statusOf(tampered), await statusOf(expired), await statusOf(bare)];
      check(`archive: ${who}'s raw file downloads over its signed link (200; Range 0-99 → 206, 100 bytes; tampered sig 403; expired 401/403; no sig 401/403)`,
        whole.status === 200 && body.length === f.bytes && ranged.status === 206 && rangedBody.length === 100 && t === 403 && [401, 403].includes(x) && [401, 403].includes(b),
        `${whole.status} ${body.length} B (the entry says ${f.bytes}), ${whole.headers.get('content-type')}; range ${ranged.status} ${rangedBody.length} B `
        + `(${ranged.headers.get('content-range')}); tampered ${t}; expired ${x}; no signature ${b}`);

      // Decoded end to end; its frames against what its publisher sent; its audio.
      const v = await run('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
        '-show_entries', 'stream=nb_read_frames,codec_name,width,height', '-of', 'json', local], 120_000);
      const vs = json(v.stdout)?.streams?.[0];
      const frames = Number(vs?.nb_read_frames ?? 0);
      const errors = v.stderr.trim() ? v.stderr.trim().split('\n') : [];
      check(`archive: ${who}'s raw file decodes end to end (ffprobe -count_frames, no errors)`, v.code === 0 && frames > 0 && errors.length === 0,
        `${vs?.codec_name} ${vs?.width}x${vs?.height}, ${frames} frames decoded${errors.length ? `; ${errors.length} error lines, first: ${errors[0]}` : ''}${v.code ? `; ffprobe ${v.code}` : ''}`);
      const want = sent[who]?.frames;
      const off = want ? (frames - want) / want : NaN;
      check(`archive: ${who}'s recorded video frames are within 2 % of what it sent`, Number.isFinite(off) && Math.abs(off) <= 0.02,
        `recorded ${frames} (the entry says ${f.video_frames}), sent ${want} (${sent[who]?.how ?? 'unknown publisher'}): ${Number.isFinite(off) ? `${off >= 0 ? '+' : ''}${(off * 100).toFixed(2)} %` : 'n/a'}`);
      const a = await run('ffprobe', ['-v', 'error', '-count_packets', '-select_streams', 'a:0',
        '-show_entries', 'stream=codec_name,sample_rate,channels,nb_read_packets', '-of', 'json', local], 60_000);
      const as = json(a.stdout)?.streams?.[0];
      const long = f.started_at && f.ended_at ? (f.ended_at - f.started_at) / 1000 : null;
      check(`archive: ${who}'s raw file has its audio stream`, a.code === 0 && !!as && Number(as.nb_read_packets) > 0,
        as ? `${as.codec_name} ${as.sample_rate} Hz ${as.channels} ch, ${as.nb_read_packets} packets over ${long?.toFixed(1) ?? '?'} s (the entry says ${f.audio_frames} audio frames)` : `no audio stream ${a.stderr.trim()}`);
    }

    // ---- The host's Archive panel: the stage video plays ----
    await host.click('#archive-toggle');
    const item = host.locator(`#archive-list li[data-id="${entry.id}"]`);
    await item.waitFor({ timeout: 15_000 });
    const shown = await item.evaluate((li) => ({
      state: li.dataset.state,
      text: [...li.querySelectorAll('p')].map((p) => p.textContent),
      buttons: [...li.querySelectorAll('button')].map((b) => b.textContent),
      download: [...li.querySelectorAll('.archive-actions a')].map((a) => ({ text: a.textContent, href: a.getAttribute('href'), download: a.hasAttribute('download') })),
      raw: [...li.querySelectorAll('.archive-raw a')].map((a) => ({ text: a.textContent, href: a.getAttribute('href'), download: a.hasAttribute('download') })),
    }));
    check('archive: the host\'s Archive panel lists the entry (date · duration, "Ready", "Deleted on …", Play, Download, Delete, 3 raw files)',
      shown.text[1] === 'Ready' && / · \d+:\d\d$/.test(shown.text[0]) && /^Deleted on /.test(shown.text[2])
      && ['Play', 'Delete'].every((b) => shown.buttons.includes(b)) && shown.download.length === 1 && shown.raw.length === 3,
      JSON.stringify({ text: shown.text, buttons: shown.buttons, raw: shown.raw.map((r) => r.text) }));
    if (entry.video?.url) {
      await item.getByRole('button', { name: /^Play/ }).click();
      const video = () => host.evaluate(() => {
        const v = document.getElementById('archive-video');
        return { open: document.getElementById('archive-dialog').open, readyState: v.readyState, width: v.videoWidth, height: v.videoHeight,
          time: v.currentTime, duration: v.duration, paused: v.paused, error: v.error ? `${v.error.code} ${v.error.message}` : null };
      });
      const playing = await until('the stage video playing past 2 s', async () => {
        const s = await video();
        if (s.error) return s;
        return s.open && s.readyState >= 2 && s.width > 0 && s.time > 2 ? s : null;
      }, 20_000).catch(async (e) => ({ timeout: e.message, ...(await video()) }));
      check('archive: Play opens the stage video in the panel\'s player and it plays (readyState >= 2, frames, past 2 s)',
        !playing.error && !playing.timeout && playing.readyState >= 2 && playing.width > 0 && playing.time > 2,
        `${playing.width}x${playing.height}, readyState ${playing.readyState}, at ${playing.time?.toFixed(2)} s of ${playing.duration?.toFixed(1)} s`
        + `${playing.error ? `; error ${playing.error}` : ''}${playing.timeout ? `; ${playing.timeout}` : ''}`);

      // The middle: at 30 s everyone is on stage. Seek there, then look at the frame: three tiles
      // (two on top, the third centred below) and the background beside the third.
      const seeked = await host.evaluate((t) => new Promise((resolve) => {
        const v = document.getElementById('archive-video');
        v.pause();
        const done = () => resolve(v.currentTime);
        v.addEventListener('seeked', done, { once: true });
        v.currentTime = t;
        setTimeout(done, 5000);
      }), 30);
      await sleep(700);
      const frame = await host.evaluate((bg) => {
        const v = document.getElementById('archive-video');
        const W = v.videoWidth, H = v.videoHeight;
        const c = document.createElement('canvas');
        c.width = W; c.height = H;
        const g = c.getContext('2d', { willReadFrequently: true });
        g.drawImage(v, 0, 0, W, H);
        // A box of 1/8 × 1/8 of the frame around (x, y): its mean colour, how far that is from the
        // background, and how much its brightness varies.
        const box = (x, y) => {
          const w = Math.round(W / 8), hh = Math.round(H / 8);
          const d = g.getImageData(Math.round(x * W - w / 2), Math.round(y * H - hh / 2), w, hh).data;
          const sum = [0, 0, 0];
          let sq = 0;
          const n = d.length / 4;
          for (let i = 0; i < d.length; i += 4) {
            sum[0] += d[i]; sum[1] += d[i + 1]; sum[2] += d[i + 2];
            const l = (d[i] + d[i + 1] + d[i + 2]) / 3;
            sq += l * l;
          }
          const mean = sum.map((s) => s / n);
          const lum = (mean[0] + mean[1] + mean[2]) / 3;
          return { mean: mean.map(Math.round), off: Math.round(Math.max(...mean.map((m, i) => Math.abs(m - bg[i])))),
            sd: Math.round(Math.sqrt(Math.max(0, sq / n - lum * lum))) };
        };
        return { size: `${W}x${H}`, at: v.currentTime, tiles: [box(0.25, 0.25), box(0.75, 0.25), box(0.5, 0.75)], empty: [box(0.125, 0.75), box(0.875, 0.75)] };
      }, BACKGROUND);
      const filled = (r) => r.off > 12 || r.sd > 8;
      check('archive: the stage video at 30 s shows the three publishers (2×2 grid: two tiles on top, the third centred below, background beside it)',
        Math.abs(seeked - 30) < 1 && frame.tiles.every(filled) && frame.empty.every((r) => !filled(r)),
        `${frame.size} at ${frame.at.toFixed(2)} s; tiles (top left, top right, bottom centre) ${frame.tiles.map((r) => `rgb(${r.mean}) off ${r.off} sd ${r.sd}`).join(' | ')}; `
        + `beside the third ${frame.empty.map((r) => `rgb(${r.mean}) off ${r.off} sd ${r.sd}`).join(' | ')}`);
      // Expected: the dialog over the dimmed room page, the video paused at 0:30 — Ann Host's and
      // Bob Cohost's fake cameras (Chromium's: a bright green pac-man on dark green, 180p scaled
      // up, so soft) side by side on top, the studio's testsrc2 (colour bars, a moving rainbow
      // line, its clock top left) centred below them, the dark background (#16181d) left and right
      // of it; the title "The live of <date, time> · 1:0x", "On stage: Ann Host, Bob Cohost,
      // Studio", Download and Close below. At 360 px the same, the dialog the screen's width.
      await shot(host, 'archive-host.png');
      await host.setViewportSize({ width: 360, height: 740 });
      await sleep(500);
      const fit = await host.evaluate(() => ({ page: document.documentElement.scrollWidth, dialog: Math.round(document.getElementById('archive-dialog').getBoundingClientRect().right) }));
      // The same at 360 px: the dialog as wide as the screen less a margin, the video 16:9 in it.
      await shot(host, 'archive-host-360.png');

      // ---- Download and Delete ----
      const dialogDownload = await host.evaluate(() => document.getElementById('archive-dialog-download').getAttribute('href'));
      await host.click('#archive-dialog-close');
      await item.scrollIntoViewIfNeeded();
      const panelFit = await host.evaluate(() => {
        const panel = document.getElementById('archive-panel').getBoundingClientRect();
        const widest = Math.max(...[...document.querySelectorAll('#archive-panel *')].map((el) => el.getBoundingClientRect().right));
        return { page: document.documentElement.scrollWidth, panel: Math.round(panel.right), widest: Math.round(widest) };
      });
      await shot(host, 'archive-panel-360.png');
      check('archive: at 360 px the player and the Archive panel fit the screen (nothing wider)',
        fit.page <= 360 && fit.dialog <= 360 && panelFit.page <= 360 && panelFit.widest <= 360,
        `with the player: page ${fit.page} px, dialog's right edge ${fit.dialog} px; the panel: page ${panelFit.page} px, its widest part ends at ${panelFit.widest} px`);
      await host.setViewportSize({ width: 1280, height: 800 });

      const dl = new URL(shown.download[0]?.href ?? '/', base);
      const attachment = await fetch(dl, { headers: { Range: 'bytes=0-0' }, signal: AbortSignal.timeout(30_000) });
      await attachment.arrayBuffer().catch(() => {});
      const disposition = attachment.headers.get('content-disposition') ?? '';
      const rawLinks = shown.raw.every((r) => r.download && new URL(r.href, base).searchParams.get('download') === '1');
      check('archive: Download links carry download=1 (the video\'s and each raw file\'s) and the server answers them as an attachment',
        dl.searchParams.get('download') === '1' && shown.download[0]?.download && new URL(dialogDownload ?? '/', base).searchParams.get('download') === '1'
        && rawLinks && [200, 206].includes(attachment.status) && /^attachment/.test(disposition),
        `${dl.pathname}?…download=${dl.searchParams.get('download')} → ${attachment.status}, Content-Disposition: ${disposition || 'none'}; raw links ${rawLinks ? 'ok' : JSON.stringify(shown.raw)}`);
    } else {
      check('archive: Play opens the stage video in the panel\'s player and it plays', false, `no stage video (${entry.state}${entry.error ? `: ${entry.error}` : ''})`);
    }

    let asked = null;
    host.once('dialog', (d) => { asked = d.message(); d.accept(); });
    await item.getByRole('button', { name: /^Delete/ }).click();
    const gone = await until('the entry gone from the panel', async () => (await item.count()) === 0, 15_000).then(() => true, () => false);
    const after = await api('GET', `/api/v1/archive/${entry.id}`);
    const fileAfter = await statusOf(new URL(raw[0]?.url ?? entry.video?.url ?? '/', base));
    const panelSays = await host.evaluate(() => document.getElementById('archive-status').textContent);
    check('archive: Delete (confirmed) removes the entry: gone from the panel, the API answers 404, its files too',
      !!asked && gone && after.status === 404 && fileAfter === 404,
      `confirm "${asked}"; panel: ${gone ? 'gone' : 'still listed'} ("${panelSays}"); GET by id ${after.status} ${after.json?.error?.code ?? ''}; a file's signed link ${fileAfter}`);
  } catch (e) {
    check('archive: the scenario ran to the end', false, e.message);
  } finally {
    ffmpeg?.kill('SIGKILL');
    for (const c of contexts) await c.close().catch(() => {});
    server.kill('SIGKILL');
    fs.rmSync(data, { recursive: true, force: true });
  }
}
