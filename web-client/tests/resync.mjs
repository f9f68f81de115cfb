// The "resync" scenario of e2e.mjs (issue #17, no lost state): a server of its own whose
// connections queue 16 room messages (ONAIR_OUTBOX_MESSAGES); 8 commenters post 5 comments each
// at once, so one fan-out tick carries 40 comments and the viewer's queue overflows. The page gets
// `resync` and shows the conversation as the server has it: the same comments, in the same order,
// as a client that joins afterwards finds in its `joined`; a comment after that arrives as usual.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export async function resync(h) {
  const { browser, check, until, shot, bin, freePort } = h;
  const [port, adminPort, rtmpPort] = [await freePort(), await freePort(), await freePort()];
  const base = `http://127.0.0.1:${port}`;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'onair-e2e-resync-'));
  const server = spawn(bin, ['--dev', '--http-bind', `127.0.0.1:${port}`, '--udp-bind', '127.0.0.1:0', '--admin-bind', `127.0.0.1:${adminPort}`], {
    env: { ...process.env, ONAIR_AUTH_SECRET: 'e2e-resync-secret', RUST_LOG: process.env.RUST_LOG || 'warn,rtc_dtls=error',
      ONAIR_RTMP_BIND: `127.0.0.1:${rtmpPort}`, ONAIR_RTMP_KEYS_FILE: path.join(data, 'keys.json'),
      ONAIR_STORE_URL: `sqlite:${path.join(data, 'onair.db')}`, ONAIR_ARCHIVE_RECORD: 'false', ONAIR_OUTBOX_MESSAGES: '16',
      // The browsers run on the server's machine here: signaling's threads keep their share of it
      // (a node runs alone; http.thread_nice lets its media threads win its cores).
      ONAIR_HTTP_THREAD_NICE: '0' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const contexts = [];
  try {
    await until('the second server', async () => (await fetch(`${base}/healthz`)).ok, 15_000);
    const token = async (identity, role) => {
      const q = new URLSearchParams({ room: 'burst', identity, role, name: identity });
      return (await (await fetch(`${base}/api/dev/token?${q}`)).json()).token;
    };
    // The crowd: a host and 8 commenters on raw WebSockets, in a page of their own.
    const botsCtx = await browser.newContext();
    contexts.push(botsCtx);
    const bots = await botsCtx.newPage();
    await bots.goto(`${base}/healthz`);
    const botTokens = [await token('burst-host', 'host')];
    for (let i = 0; i < 8; i++) botTokens.push(await token(`fan${i}`, 'viewer'));
    const joined = await bots.evaluate(async (tokens) => {
      const url = `ws://${location.host}/ws`;
      window.bots = await Promise.all(tokens.map((t) => new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.onopen = () => ws.send(JSON.stringify({ type: 'join', token: t, protocol: 1 }));
        ws.onmessage = (ev) => { const m = JSON.parse(ev.data); if (m.type === 'joined') resolve(ws); else if (m.type === 'error') reject(new Error(m.message)); };
        setTimeout(() => reject(new Error('no joined')), 10_000);
      })));
      return window.bots.length;
    }, botTokens);

    const viewerCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    contexts.push(viewerCtx);
    const viewer = await viewerCtx.newPage();
    viewer.on('pageerror', (e) => console.error(`[resync-viewer] page error: ${e.message}`));
    await viewer.goto(`${base}/?token=${encodeURIComponent(await token('watcher', 'viewer'))}`);
    await until('the viewer joined', () => viewer.evaluate(() => !!window.__onair.state.session.me), 10_000);

    // 40 comments within one fan-out tick (100 ms): each commenter's burst of 5.
    await bots.evaluate(() => {
      window.bots.slice(1).forEach((ws, i) => {
        for (let k = 0; k < 5; k++) ws.send(JSON.stringify({ type: 'comment', text: `burst ${i}-${k}` }));
      });
    });
    const got = await until('the viewer resynced with all 40 comments', () => viewer.evaluate(() => {
      const s = window.__onair.state;
      const texts = s.chat.comments.map((c) => c.text).filter((t) => t.startsWith('burst '));
      return s.session.resyncs > 0 && texts.length === 40 ? { resyncs: s.session.resyncs, joins: s.session.joins } : null;
    }), 10_000).catch((e) => ({ error: e.message }));
    // What the server has: the history a client joining now gets.
    const history = await bots.evaluate(async (t) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://${location.host}/ws`);
      ws.onopen = () => ws.send(JSON.stringify({ type: 'join', token: t, protocol: 1 }));
      ws.onmessage = (ev) => { const m = JSON.parse(ev.data); if (m.type === 'joined') { ws.close(); resolve(m.chat.comments.map((c) => String(c.id))); } };
      setTimeout(() => reject(new Error('no joined')), 10_000);
    }), await token('late', 'viewer'));
    const shown = await viewer.evaluate(() => [...document.querySelectorAll('#comments li.comment')].map((li) => li.dataset.id));
    check('resync: a viewer whose queue overflowed gets a resync, on the same connection',
      got.resyncs >= 1 && got.joins === 1 && joined === 9, JSON.stringify(got));
    check('resync: the page shows the conversation the server has (same comments, same order)',
      shown.length === history.length && shown.every((id, i) => id === history[i]), `${shown.length} shown, ${history.length} in the history`);
    await bots.evaluate(() => window.bots[0].send(JSON.stringify({ type: 'comment', text: 'after the burst' })));
    const after = await until('the next comment', () => viewer.evaluate(() =>
      [...document.querySelectorAll('#comments li.comment')].some((li) => li.textContent.includes('after the burst'))), 5000).catch(() => false);
    check('resync: the next comment arrives as usual', after === true);
    await shot(viewer, 'resync-viewer.png');
    await bots.evaluate(() => window.bots.forEach((ws) => ws.close()));
  } finally {
    for (const c of contexts) await c.close().catch(() => {});
    server.kill('SIGKILL');
    fs.rmSync(data, { recursive: true, force: true });
  }
}
