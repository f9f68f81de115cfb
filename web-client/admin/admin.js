// The operator dashboard: polls GET /admin/api/overview every 2 s with the admin token and draws
// the node's health, the lives on air with their KPIs and alerts, problem reports by tag, and past
// lives. Charts are drawn here on canvases (no library, no CDN). The token comes from the URL's
// fragment (#token=…, never sent to a server log) or the form, and is kept for this tab only.

const POLL_MS = 2000;
const HISTORY = 150; // samples kept per chart (5 minutes at 2 s)
const TAGS = ['startup', 'buffering', 'audio', 'access', 'embed'];

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};

const pct = (v, digits = 1) => (v == null ? '—' : `${(v * 100).toFixed(digits)} %`);
const ms = (v) => (v == null ? '—' : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v} ms`);
const num = (v, digits = 1) => (v == null ? '—' : Number(v).toFixed(digits));
const bytes = (b) => (b == null ? '—' : b > 1 << 30 ? `${(b / (1 << 30)).toFixed(2)} GiB` : `${(b / (1 << 20)).toFixed(0)} MiB`);
const when = (t) => (t == null ? '—' : new Date(t).toLocaleString());
const duration = (s) => {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${sec} s` : `${sec} s`;
};

// Targets (the alert rules' too: deploy/prometheus/alerts.yml).
const STARTUP_TARGET = 0.95;
const FREEZE_TARGET = 0.01;

function token() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem('onair-admin-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname);
  }
  return sessionStorage.getItem('onair-admin-token') || '';
}

const history_ = { cpu: [], pps: [], lives: new Map() };

function push(list, v) {
  list.push(v);
  if (list.length > HISTORY) list.shift();
}

// A canvas sized to its box at the screen's pixel density, cleared: its context and CSS size.
function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
  canvas.width = w * dpr;
  canvas.height = h * dpr;
  const c = canvas.getContext('2d');
  c.scale(dpr, dpr);
  c.clearRect(0, 0, w, h);
  return { c, w, h };
}

// A line chart of up to two series on one canvas; each series with its own scale and label.
function lineChart(canvas, series) {
  const { c, w, h } = prepare(canvas);
  c.strokeStyle = '#2a2f3a';
  c.lineWidth = 1;
  for (let i = 1; i < 4; i++) {
    const y = Math.round((h * i) / 4) + 0.5;
    c.beginPath(); c.moveTo(0, y); c.lineTo(w, y); c.stroke();
  }
  c.font = '11px system-ui, sans-serif';
  series.forEach((s, i) => {
    const vals = s.values.filter((v) => v != null);
    const max = Math.max(s.min ?? 0, ...vals, 1e-9);
    c.strokeStyle = s.color;
    c.lineWidth = 2;
    c.beginPath();
    s.values.forEach((v, x) => {
      if (v == null) return;
      const px = (x / Math.max(HISTORY - 1, 1)) * w;
      const py = h - 4 - (v / max) * (h - 18);
      if (x === 0 || s.values[x - 1] == null) c.moveTo(px, py);
      else c.lineTo(px, py);
    });
    c.stroke();
    c.fillStyle = s.color;
    const last = vals.length ? s.format(vals[vals.length - 1]) : '—';
    c.fillText(`${s.label}: ${last} (max ${s.format(max)})`, 6 + i * (w / 2), 12);
  });
}

function barChart(canvas, bars) {
  const { c, w, h } = prepare(canvas);
  const max = Math.max(1, ...bars.map((b) => b.value));
  const slot = w / bars.length;
  c.font = '12px system-ui, sans-serif';
  c.textAlign = 'center';
  bars.forEach((b, i) => {
    const bh = (b.value / max) * (h - 40);
    const x = i * slot + slot * 0.2;
    c.fillStyle = b.value ? '#ffb020' : '#2a2f3a';
    c.fillRect(x, h - 22 - bh, slot * 0.6, Math.max(bh, 2));
    c.fillStyle = '#e8eaf0';
    c.fillText(String(b.value), x + slot * 0.3, h - 26 - bh);
    c.fillStyle = '#9aa1b2';
    c.fillText(b.label, x + slot * 0.3, h - 6);
  });
}

function kpiBox(label, value, state) {
  return el('div', { class: state || '' }, el('b', {}, value), el('span', {}, label));
}

function kpiBoxes(k) {
  const startupState = k.startup_reliability == null ? '' : k.startup_reliability >= STARTUP_TARGET ? 'ok' : 'bad';
  const freezeState = k.freeze_ratio == null ? '' : k.freeze_ratio <= FREEZE_TARGET ? 'ok' : 'bad';
  return el(
    'div',
    { class: 'kpis' },
    kpiBox(`startup reliability (${k.startups} startups)`, pct(k.startup_reliability), startupState),
    kpiBox('first frame p50 / p95', `${ms(k.first_frame_p50_ms)} / ${ms(k.first_frame_p95_ms)}`),
    kpiBox('freeze ratio', pct(k.freeze_ratio, 2), freezeState),
    kpiBox('freezes per viewer-hour', num(k.freezes_per_viewer_hour)),
    kpiBox('recovery p50 / p95', `${ms(k.recovery_p50_ms)} / ${ms(k.recovery_p95_ms)}`),
    kpiBox('viewers reporting · watched', `${k.viewers} · ${duration(k.watch_secs)}`),
  );
}

function cohortTable(cohorts) {
  if (!cohorts?.length) return '';
  const t = el('table', { class: 'cohorts' });
  t.append(el('thead', {}, el('tr', {}, ...['Profile', 'Client', 'Viewers', 'Startup', 'First frame p95', 'Freeze ratio', 'Recovery p95'].map((h) => el('th', {}, h)))));
  const body = el('tbody');
  for (const c of cohorts) {
    body.append(el('tr', {}, el('td', {}, c.profile), el('td', {}, c.client), el('td', {}, c.viewers), el('td', {}, pct(c.startup_reliability)),
      el('td', {}, ms(c.first_frame_p95_ms)), el('td', {}, pct(c.freeze_ratio, 2)), el('td', {}, ms(c.recovery_p95_ms))));
  }
  t.append(body);
  return el('div', { class: 'scroll' }, t);
}

function renderNode(n) {
  const dl = $('#node-figures');
  dl.replaceChildren();
  const add = (k, v) => dl.append(el('dt', {}, k), el('dd', {}, v));
  add('CPU', n.cpu_percent == null ? '—' : `${n.cpu_percent.toFixed(0)} % of ${n.cores * 100} %`);
  add('Memory (RSS)', bytes(n.rss_bytes));
  add('Rooms · participants', `${n.rooms} · ${n.participants}`);
  add('Packets sent /s', n.rtp_packets_sent_per_sec == null ? '—' : Math.round(n.rtp_packets_sent_per_sec));
  add('Forwarding p99', n.forwarding_delay_p99_us == null ? '—' : ms(Math.round(n.forwarding_delay_p99_us / 1000)));
  add('Up', `${duration(n.uptime_secs)} · v${n.version}`);
  push(history_.cpu, n.cpu_percent);
  push(history_.pps, n.rtp_packets_sent_per_sec);
  lineChart($('#cpu-chart'), [
    { label: 'CPU %', values: history_.cpu, color: '#3ecf8e', min: n.cores * 100, format: (v) => v.toFixed(0) },
    { label: 'packets/s', values: history_.pps, color: '#5c9dff', format: (v) => Math.round(v) },
  ]);
}

function renderLives(lives) {
  const list = $('#live-list');
  if (!lives.length) {
    list.replaceChildren(el('p', { class: 'empty' }, 'No live on this node.'));
    return;
  }
  const seen = new Set();
  list.replaceChildren(
    ...lives.map((l) => {
      seen.add(l.live_id);
      const h = history_.lives.get(l.live_id) || { viewers: [], freeze: [] };
      history_.lives.set(l.live_id, h);
      push(h.viewers, l.viewers);
      push(h.freeze, l.kpis.freeze_ratio == null ? null : l.kpis.freeze_ratio * 100);
      const stage = l.stage.length ? l.stage.map((s) => `${s.name}${s.kind === 'studio' ? ' (studio)' : ''}`).join(', ') : 'nobody on stage';
      const canvas = el('canvas', { width: 600, height: 110, 'aria-label': `Viewers and freeze ratio of ${l.room}` });
      const box = el(
        'article',
        { class: 'live', 'data-room': l.room },
        el('h3', {}, l.room, el('span', { class: `pill ${l.state}` }, l.state), el('span', { class: 'pill' }, l.profile),
          el('span', { class: 'pill' }, `${l.viewers} viewers`), el('span', { class: 'pill' }, l.started_at ? `since ${new Date(l.started_at).toLocaleTimeString()}` : 'not started')),
        el('p', { class: 'stage' }, `Stage: ${stage}`),
        l.alerts.length ? el('ul', { class: 'alerts' }, ...l.alerts.map((a) => el('li', { 'data-code': a.code }, a.message))) : '',
        kpiBoxes(l.kpis),
        cohortTable(l.kpis.cohorts),
        canvas,
      );
      requestAnimationFrame(() =>
        lineChart(canvas, [
          { label: 'viewers', values: h.viewers, color: '#5c9dff', format: (v) => Math.round(v) },
          { label: 'freeze %', values: h.freeze, color: '#ff5c5c', min: FREEZE_TARGET * 100, format: (v) => v.toFixed(2) },
        ]),
      );
      return box;
    }),
  );
  for (const id of history_.lives.keys()) if (!seen.has(id)) history_.lives.delete(id);
}

function renderProblems(p) {
  barChart($('#problem-chart'), TAGS.map((t) => ({ label: t, value: p.by_tag[t] || 0 })));
  const list = $('#problem-list');
  if (!p.recent.length) {
    list.replaceChildren(el('li', { class: 'empty' }, 'No reports.'));
    return;
  }
  list.replaceChildren(
    ...p.recent.map((r) => {
      const q = r.qoe || {};
      const qoe = q.watch_ms != null ? ` · watched ${duration(q.watch_ms / 1000)}, ${q.freezes ?? 0} freezes, first frame ${ms(q.first_frame_ms)}` : '';
      const ctx = r.context && typeof r.context === 'object' ? Object.entries(r.context).slice(0, 4).map(([k, v]) => `${k}: ${String(v).slice(0, 60)}`).join(' · ') : '';
      return el('li', { 'data-tag': r.tag }, el('span', { class: 'tag' }, r.tag), ' — ', r.text || '(no words)',
        el('div', { class: 'meta' }, `${r.room} · ${r.identity} · ${when(r.at)}${qoe}`), ctx ? el('div', { class: 'meta' }, ctx) : '');
    }),
  );
}

function renderPast(past) {
  const body = $('#past-table tbody');
  if (!past.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 8, class: 'empty' }, 'No live has ended yet.')));
    return;
  }
  body.replaceChildren(
    ...past.map((l) => {
      const k = l.kpis || {};
      return el('tr', { 'data-live': l.live_id }, el('td', {}, l.room), el('td', {}, when(l.ended_at)), el('td', {}, k.viewers ?? '—'),
        el('td', {}, pct(k.startup_reliability)), el('td', {}, `${ms(k.first_frame_p50_ms)} / ${ms(k.first_frame_p95_ms)}`),
        el('td', {}, pct(k.freeze_ratio, 2)), el('td', {}, num(k.freezes_per_viewer_hour)), el('td', {}, `${ms(k.recovery_p50_ms)} / ${ms(k.recovery_p95_ms)}`));
    }),
  );
}

async function poll() {
  const status = $('#status');
  try {
    const res = await fetch('/admin/api/overview', { headers: { Authorization: `Bearer ${token()}` }, cache: 'no-store' });
    if (res.status === 401 || res.status === 503) {
      const body = await res.json().catch(() => ({}));
      status.textContent = body?.error?.message || 'The admin token is needed.';
      status.className = 'bad';
      $('#login').hidden = false;
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const o = await res.json();
    renderNode(o.node);
    renderLives(o.lives);
    renderProblems(o.problems);
    renderPast(o.past);
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    status.className = '';
    document.body.dataset.ready = 'true';
  } catch (e) {
    status.textContent = `Cannot reach the server: ${e.message}`;
    status.className = 'bad';
  }
}

$('#login').addEventListener('submit', (e) => {
  e.preventDefault();
  sessionStorage.setItem('onair-admin-token', $('#token').value.trim());
  $('#login').hidden = true;
  poll();
});

poll();
setInterval(poll, POLL_MS);
