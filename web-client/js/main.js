// Onair browser client: co-hosts go live, viewers watch. Plain ES modules, no build step.
// Protocol: docs/protocol.md; the module map: docs/web-client.md. Two peer connections: the
// publisher (we offer our camera and mic, publish.js) and the subscriber (the server offers
// everyone else's tracks, subscribe.js).

import { session, token } from './state.js';
import { $, banner, renderControls } from './ui.js';
import { connect, keepAlive } from './signal.js';
import { startPreview, wirePublishing } from './publish.js';
import { wireQuality } from './subscribe.js';
import { wireStagePanel, wireUnmute } from './stage.js';
import { wireStudio } from './studio.js';
import { wireSession } from './session.js';
import { wireChat } from './chat.js';
import { wireModeration } from './moderation.js';
import { wireCommerce } from './commerce.js';
import { wireQoe } from './qoe.js';
import { wireSchedule } from './schedule.js';
import { wireArchive } from './archive.js';
import { watchPath } from './path.js';
import './reactions.js';
import './debug.js';

function decodeClaims(t) {
  try {
    const b = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b + '='.repeat((4 - (b.length % 4)) % 4)));
  } catch { return null; }
}

// Without a token: a lobby that mints one (dev mode only).
function showLobby() {
  $('lobby').hidden = false;
  $('conn').hidden = true;
  $('lobby-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const room = $('lobby-room').value.trim();
    const name = $('lobby-name').value.trim();
    const role = $('lobby-role').value;
    const identity = `${name.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${Math.random().toString(36).slice(2, 7)}`;
    const q = new URLSearchParams({ room, identity, name, role });
    const r = await fetch(`/api/dev/token?${q}`);
    if (!r.ok) {
      $('lobby-note').textContent = r.status === 404
        ? 'This server is not in dev mode: ask your host for a link with a token.'
        : `Could not get a token (${r.status}).`;
      return;
    }
    const { token: t } = await r.json();
    location.search = `?token=${encodeURIComponent(t)}`;
  });
}

if (!token) {
  showLobby();
} else {
  session.claims = decodeClaims(token);
  $('room-name').textContent = session.claims?.room ?? '';
  wirePublishing();
  wireSession();
  wireStudio();
  wireQuality();
  wireUnmute();
  wireStagePanel();
  wireChat();
  wireModeration();
  wireCommerce();
  wireQoe();
  wireSchedule();
  wireArchive();
  keepAlive();
  watchPath();
  renderControls();
  $('room').hidden = false;
  if (session.claims?.role === 'host' || session.claims?.role === 'cohost') {
    startPreview().catch((e) => { if (!session.over) banner(`Camera or microphone unavailable: ${e.message}`); });
  }
  connect();
}
