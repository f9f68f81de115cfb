// The "schedule" scenario of e2e.mjs (issue #14): the host announces a live from the room page
// (title, time, description, banner) and sees it in the Scheduled panel; a viewer opens its
// upcoming page (banner, countdown, calendar file) and asks to be reminded; a page without a token
// says how to get a reminder; the host cancels another live from its upcoming page; "Go live with
// this" makes the running live the scheduled one, and its page says LIVE with Watch now.
// Screenshots at desktop size and 360 px.

export async function schedule(h) {
  const { open, token, check, until, shot, base, API_KEY, browser } = h;
  const room = 'sched-live';
  const hostToken = await token(room, 'sched-host', 'host', 'Host');
  const host = await open('sched-host', hostToken);
  await until('the host joined', () => host.evaluate(() => !!window.__onair.state.session.me), 10_000);
  await until('the Scheduled button', () => host.evaluate(() => !document.getElementById('schedule-toggle').hidden), 5000);

  // A banner drawn in the page, as a PNG file.
  const png = Buffer.from((await host.evaluate(() => {
    const c = document.createElement('canvas');
    c.width = 1280; c.height = 720;
    const g = c.getContext('2d');
    const grad = g.createLinearGradient(0, 0, 1280, 720);
    grad.addColorStop(0, '#ff3b5c'); grad.addColorStop(1, '#3b5cff');
    g.fillStyle = grad; g.fillRect(0, 0, 1280, 720);
    g.fillStyle = '#fff'; g.font = 'bold 96px sans-serif'; g.fillText('SPRING DROP', 120, 400);
    return c.toDataURL('image/png');
  })).split(',')[1], 'base64');

  // Scheduled from the room page: tomorrow, 18:30 local time.
  await host.click('#schedule-toggle');
  await host.click('#schedule-new');
  const at = await host.evaluate(() => {
    const d = new Date(Date.now() + 86_400_000);
    d.setHours(18, 30, 0, 0);
    return { local: new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16), secs: Math.floor(d.getTime() / 1000) };
  });
  await host.fill('#schedule-title', 'Spring drop — live try-on');
  await host.fill('#schedule-at', at.local);
  await host.fill('#schedule-description', 'Four new looks, live.\nAsk us anything in the comments.');
  await host.setInputFiles('#schedule-banner', { name: 'banner.png', mimeType: 'image/png', buffer: png });
  await host.click('#schedule-submit');
  const listed = await until('the live in the Scheduled panel', () => host.evaluate(() => {
    const li = document.querySelector('#schedule-list li');
    return li && document.getElementById('schedule-dialog').open === false ? li.textContent : null;
  }), 5000).catch((e) => e.message);
  const all = await (await fetch(`${base}/api/v1/schedules?room=${room}`)).json();
  const s = all.schedules?.[0];
  check('schedule: the host schedules a live from the room page, with its banner, and sees it listed',
    s?.title === 'Spring drop — live try-on' && s.starts_at === at.secs && /^\/media\/schedules\//.test(s.banner_url ?? '') && /Spring drop/.test(listed),
    `${listed} · ${JSON.stringify(s)}`);
  await shot(host, 'schedule-host-panel.png');

  // A viewer's upcoming page: banner, title, countdown; Remind me.
  const viewerToken = await token(room, 'sched-fan', 'viewer', 'Fan');
  const viewerCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const viewer = await viewerCtx.newPage();
  viewer.on('pageerror', (e) => console.error(`[sched-viewer] page error: ${e.message}`));
  await viewer.goto(`${base}/upcoming/${s.id}?token=${encodeURIComponent(viewerToken)}`);
  const shown = await until('the upcoming page drawn', () => viewer.evaluate(() => {
    const img = document.getElementById('up-banner');
    const cd = document.getElementById('up-countdown');
    return document.getElementById('up-title').textContent !== 'Upcoming live' && img.complete && img.naturalWidth > 0 && !cd.hidden
      ? { title: document.getElementById('up-title').textContent, banner: img.naturalWidth, days: document.getElementById('up-d').textContent,
        h: document.getElementById('up-h').textContent, state: document.getElementById('up-state').textContent }
      : null;
  }), 5000).catch((e) => e.message);
  check('schedule: the upcoming page shows the banner, the title and a countdown', shown?.title === 'Spring drop — live try-on' && shown.banner === 1280
    && (shown.days === '1' || (shown.days === '0' && Number(shown.h) >= 18)), JSON.stringify(shown));
  await viewer.click('#up-remind');
  const reminded = await until('the reminder set', () => viewer.evaluate(() => document.getElementById('up-remind').getAttribute('aria-pressed') === 'true'
    ? document.getElementById('up-remind').textContent : null), 5000).catch((e) => e.message);
  const seenByHost = await (await fetch(`${base}/api/v1/schedules/${s.id}`, { headers: { Authorization: `Bearer ${hostToken}` } })).json();
  check('schedule: Remind me sets a reminder the host can see', /Reminder set/.test(reminded) && JSON.stringify(seenByHost.subscribers) === '["sched-fan"]',
    `${reminded} · ${JSON.stringify(seenByHost.subscribers)}`);
  await shot(viewer, 'schedule-upcoming-desktop.png');
  await viewer.setViewportSize({ width: 360, height: 740 });
  const narrow = await viewer.evaluate(() => ({ overflow: document.documentElement.scrollWidth - window.innerWidth,
    remind: document.getElementById('up-remind').getBoundingClientRect().right <= window.innerWidth }));
  check('schedule: the upcoming page fits 360 px', narrow.overflow <= 0 && narrow.remind, JSON.stringify(narrow));
  await shot(viewer, 'schedule-upcoming-360.png', { fullPage: true });
  const ics = await viewer.evaluate(async () => {
    const r = await fetch(document.getElementById('up-calendar').href);
    return { type: r.headers.get('content-type'), body: await r.text() };
  });
  check('schedule: Add to calendar downloads the live as an .ics event', ics.type.startsWith('text/calendar') && /SUMMARY:Spring drop/.test(ics.body)
    && /BEGIN:VEVENT/.test(ics.body), ics.type);

  // Without a token: no reminder, and the page says why.
  const anon = await viewerCtx.newPage();
  await anon.goto(`${base}/upcoming/${s.id}`);
  const anonView = await until('the anonymous page', () => anon.evaluate(() => {
    const b = document.getElementById('up-remind');
    return document.getElementById('up-note').textContent ? { disabled: b.disabled, note: document.getElementById('up-note').textContent } : null;
  }), 5000).catch((e) => e.message);
  check('schedule: without a token, Remind me is off and the page says how to get one', anonView?.disabled === true && /reminder/.test(anonView.note), JSON.stringify(anonView));
  await anon.close();

  // The host cancels another live from its page.
  const other = await (await fetch(`${base}/api/v1/schedules`, { method: 'POST', headers: { Authorization: `Bearer ${API_KEY}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ room, title: 'Encore', starts_at: Math.floor(Date.now() / 1000) + 3 * 86400 }) })).json();
  const hostUp = await viewerCtx.newPage();
  hostUp.on('dialog', (d) => d.accept());
  await hostUp.goto(`${base}/upcoming/${other.id}?token=${encodeURIComponent(hostToken)}`);
  await until('the host controls', () => hostUp.evaluate(() => !document.getElementById('up-host').hidden), 5000);
  await hostUp.click('#up-cancel');
  const cancelled = await until('cancelled', () => hostUp.evaluate(() => document.getElementById('up-state').textContent === 'Cancelled'
    ? document.getElementById('up-note').textContent : null), 5000).catch((e) => e.message);
  check('schedule: the host cancels a live from its upcoming page', /cancelled/.test(cancelled), cancelled);
  await hostUp.close();

  // "Go live with this" in the room page: the running live is the scheduled one.
  await host.click('#schedule-toggle');
  await host.click('#schedule-toggle');
  await until('the panel open', () => host.evaluate(() => !document.getElementById('schedule-panel').hidden), 3000);
  await host.evaluate(() => [...document.querySelectorAll('#schedule-list button')].find((b) => b.textContent === 'Go live with this')?.click());
  const linked = await until('the schedule live', async () => {
    const v = await (await fetch(`${base}/api/v1/schedules/${s.id}`)).json();
    return v.state === 'live' ? v : null;
  }, 5000).catch((e) => ({ error: e.message }));
  await viewer.setViewportSize({ width: 1280, height: 800 });
  await viewer.reload();
  const watch = await until('Watch now', () => viewer.evaluate(() => (!document.getElementById('up-watch').hidden
    ? `${document.getElementById('up-state').textContent} ${document.getElementById('up-watch').textContent}` : null)), 5000).catch((e) => e.message);
  const rooms = await (await fetch(`${base}/api/v1/rooms`, { headers: { Authorization: `Bearer ${API_KEY}` } })).json();
  const liveId = rooms.rooms?.find((r) => r.room === room)?.live_id;
  check('schedule: "Go live with this" makes the running live the scheduled one; its page says LIVE, Watch now',
    linked.state === 'live' && watch === 'LIVE Watch now' && linked.live_id === liveId, `${JSON.stringify(linked)} · ${watch}`);
  await shot(viewer, 'schedule-upcoming-live.png');
  await viewerCtx.close();
  await host.context().close();
}
