// Reactions: the six emoji to tap, and everyone's taps (the server sums them every 250 ms)
// floating up over the stage. The floats on screen are capped, so a thousand taps in a window
// draw no more than a few do.

import { chat, session } from './state.js';
import { $ } from './ui.js';
import { handlers, send } from './signal.js';

const MAX_FLOATING = 24; // floats on screen at once
const PER_WINDOW = 8;    // new floats per `reactions` message
const FLOAT_MS = 2600;   // as long as the CSS animation
const TAP_GAP_MS = 100;  // our taps: at most ten a second (the server drops more than 20)

const NAMES = { '❤️': 'Heart', '🔥': 'Fire', '👏': 'Applause', '😂': 'Laughing', '😮': 'Wow', '🎉': 'Party' };

let lastTap = 0;
export const bursts = { shown: 0 }; // floats drawn since the page opened (the test hook reads it)

const compact = new Intl.NumberFormat('en', { notation: 'compact' });

function renderTotal() {
  const n = Object.values(chat.totals).reduce((a, b) => a + b, 0);
  $('reaction-total').textContent = n ? `${compact.format(n)} reaction${n === 1 ? '' : 's'}` : '';
}

export function renderReactions() {
  const row = $('reaction-row');
  if (row.dataset.emoji !== chat.emoji.join(' ')) {
    row.dataset.emoji = chat.emoji.join(' ');
    row.replaceChildren(...chat.emoji.map((e) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = e;
      b.setAttribute('aria-label', `React: ${NAMES[e] ?? e}`);
      b.addEventListener('click', () => tap(e, b));
      return b;
    }));
  }
  const closed = !session.me || !!session.over;
  for (const b of row.children) b.disabled = closed;
  renderTotal();
}

function tap(emoji, button) {
  if (Date.now() - lastTap < TAP_GAP_MS) return;
  lastTap = Date.now();
  send({ type: 'react', emoji });
  button.classList.remove('tapped');
  void button.offsetWidth; // restart the animation
  button.classList.add('tapped');
}

// Where floats start, in the layer: near the bottom right corner of the video (the layer spans
// the whole stage area, which on a wide window has empty bands around the tiles).
function origin() {
  const layer = $('bursts').getBoundingClientRect();
  const tiles = [...document.querySelectorAll('#stage .tile')].map((t) => t.getBoundingClientRect());
  if (!tiles.length) return { left: layer.width * 0.75, bottom: 12, spread: layer.width * 0.15 };
  const right = Math.max(...tiles.map((r) => r.right));
  const width = right - Math.min(...tiles.map((r) => r.left));
  return { left: right - layer.left - Math.min(140, width * 0.3), bottom: layer.bottom - Math.max(...tiles.map((r) => r.bottom)) + 12,
    spread: Math.min(90, width * 0.2) };
}

function float(emoji, i, at) {
  const el = document.createElement('span');
  el.className = 'float';
  el.textContent = emoji;
  el.style.left = `${Math.round(at.left + Math.random() * at.spread)}px`;
  el.style.bottom = `${Math.round(at.bottom)}px`;
  el.style.setProperty('--drift', `${Math.round((Math.random() - 0.5) * 80)}px`);
  el.style.animationDelay = `${i * 70}ms`;
  $('bursts').append(el);
  bursts.shown += 1;
  setTimeout(() => el.remove(), FLOAT_MS + i * 70);
}

handlers.reactions = (msg) => {
  chat.totals = msg.totals;
  renderTotal();
  if (session.over) return;
  const counts = Object.entries(msg.counts);
  const sum = counts.reduce((a, [, n]) => a + n, 0);
  const n = Math.min(sum, PER_WINDOW, MAX_FLOATING - $('bursts').childElementCount);
  const at = origin();
  for (let i = 0; i < n; i++) {
    // Each float picks an emoji in proportion to its taps.
    let r = Math.random() * sum;
    const [emoji] = counts.find(([, c]) => (r -= c) < 0) ?? counts[0];
    float(emoji, i, at);
  }
};
