// The conversation: the comment list (the history from `joined`, then live), the composer, and
// what the server says about our standing (comments off, slow mode, timed out). Each comment has
// a menu; its items come from `commentActions`, where each module adds the ones it owns (this one
// Delete and Report, moderation.js the moderators' actions). Authors who paid in this live carry
// their supporter badge (docs/protocol.md §14.2). User text goes in as textContent only.

import { chat, moderates, room, session } from './state.js';
import { $, sentence } from './ui.js';
import { handlers, send } from './signal.js';

const MAX_SHOWN = 200; // comments kept on the page
const NEAR_END = 40;   // px: a list scrolled closer than this to its end follows new comments

// (comment) -> [{ label, run, danger?, confirm? }], asked each time a menu opens.
export const commentActions = [];

let openMenu = null;          // id of the comment whose menu is open
let pendingText = null;       // what we sent, left in the box until the server shows it
let waitUntil = 0;            // Date.now() before which the composer waits (slow mode, rate)
let waitWhy = '';
let ticker = null;            // ticks the countdowns
let statusTimer = null;

const myRole = () => session.me?.role ?? session.claims?.role;
export const iModerate = () => moderates(myRole());

// The role to badge an author with: as the room knows them now (an appointed moderator), else
// as they were when they wrote.
export function roleOf(identity, asWritten) {
  for (const p of room.participants.values()) if (p.identity === identity) return p.role;
  return asWritten;
}

export function nameOf(identity) {
  for (const p of room.participants.values()) if (p.identity === identity) return p.name;
  return chat.comments.findLast((c) => c.identity === identity)?.name ?? identity;
}

// A passing line above the comments (acknowledgements, refusals).
export function status(text, ms = 6000) {
  $('chat-status').textContent = text;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { $('chat-status').textContent = ''; }, ms);
}

// Delete (your own; any as host or moderator, the host's by the host only) and Report (others').
commentActions.push((c) => {
  const role = myRole();
  const mine = c.identity === session.me?.identity;
  const items = [];
  if (mine || (moderates(role) && (c.role !== 'host' || role === 'host'))) {
    items.push({ label: 'Delete', danger: true, run: () => send({ type: 'delete_comment', id: c.id }) });
  }
  if (!mine) items.push({ label: 'Report', run: () => send({ type: 'report', comment: c.id }) });
  return items;
});

// A supporter's badge: a heart and the tier's name ("♥ Fan"), coloured by tier. Also used by the
// host's Supporters panel (commerce.js).
export function supporterBadge(badge) {
  const b = document.createElement('span');
  b.className = `supporter-badge tier-${Math.min(Math.max(Number(badge.tier) || 1, 1), 3)}`;
  b.setAttribute('role', 'img');
  b.setAttribute('aria-label', `Supporter badge: ${badge.name}`);
  b.textContent = `♥ ${badge.name}`;
  return b;
}

// The badge to show on a comment: the latest `badge` message about its author, else the one the
// comment came with.
const badgeOf = (c) => (chat.badges.has(c.identity) ? chat.badges.get(c.identity) : c.badge ?? null);

function actionsFor(c) {
  if (!session.me || session.over) return [];
  return commentActions.flatMap((f) => f(c));
}

function commentItem(c) {
  const li = document.createElement('li');
  li.className = 'comment';
  li.dataset.id = String(c.id);
  li.classList.toggle('mine', c.identity === session.me?.identity);
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = c.name;
  const role = roleOf(c.identity, c.role);
  if (role === 'host' || role === 'moderator') {
    const badge = document.createElement('span');
    badge.className = `role-badge role-${role}`;
    badge.textContent = role === 'host' ? 'Host' : 'Mod';
    who.append(badge);
  }
  const paid = badgeOf(c);
  if (paid) who.append(supporterBadge(paid));
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = c.text;
  const body = document.createElement('p');
  body.className = 'body';
  body.title = new Date(c.at).toLocaleTimeString();
  body.append(who, ' ', text);
  const more = document.createElement('button');
  more.type = 'button';
  more.className = 'more';
  more.textContent = '⋯';
  more.setAttribute('aria-label', `Actions for ${c.name}'s comment`);
  more.setAttribute('aria-expanded', 'false');
  more.hidden = actionsFor(c).length === 0;
  more.addEventListener('click', (e) => { e.stopPropagation(); toggleMenu(c.id); });
  li.append(body, more);
  return li;
}

const itemOf = (id) => $('comments').querySelector(`[data-id="${id}"]`);

export function closeMenu() {
  const li = openMenu === null ? null : itemOf(openMenu);
  openMenu = null;
  if (!li) return;
  li.querySelector('.actions')?.remove();
  li.querySelector('.more').setAttribute('aria-expanded', 'false');
}

function toggleMenu(id) {
  const again = openMenu === id;
  closeMenu();
  const c = chat.comments.find((x) => x.id === id);
  const li = itemOf(id);
  if (again || !c || !li) return;
  const box = document.createElement('div');
  box.className = 'actions';
  box.setAttribute('role', 'group');
  box.setAttribute('aria-label', `Actions for ${c.name}'s comment`);
  for (const a of actionsFor(c)) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = a.label;
    b.classList.toggle('danger', !!a.danger);
    b.addEventListener('click', (e) => {
      e.stopPropagation();
      // Actions that cannot be taken back ask once more, in place.
      if (a.confirm && !b.dataset.armed) { b.dataset.armed = '1'; b.textContent = a.confirm; return; }
      closeMenu();
      a.run();
    });
    box.append(b);
  }
  li.append(box);
  li.querySelector('.more').setAttribute('aria-expanded', 'true');
  openMenu = id;
  box.querySelector('button')?.focus({ preventScroll: true });
  box.scrollIntoView({ block: 'nearest' });
}

const nearEnd = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < NEAR_END;

function appendComment(c) {
  const list = $('comments');
  const follow = nearEnd(list) || c.identity === session.me?.identity;
  list.append(commentItem(c));
  while (list.childElementCount > MAX_SHOWN) list.firstElementChild.remove();
  if (follow) list.scrollTop = list.scrollHeight; else $('comments-new').hidden = false;
}

// Drawn again (a join, a role or a standing changed): where the reader was stays put.
export function renderComments() {
  const list = $('comments');
  const open = openMenu;
  const [follow, top] = [nearEnd(list), list.scrollTop];
  openMenu = null;
  list.replaceChildren(...chat.comments.map(commentItem));
  list.scrollTop = follow ? list.scrollHeight : top;
  if (follow) $('comments-new').hidden = true;
  if (open !== null) toggleMenu(open);
}

const clock = (ms) => {
  const s = Math.ceil(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}` : `${s} s`;
};

// The composer and the lines about it, from the state; ticks while a countdown runs.
export function renderComposer() {
  const now = Date.now();
  if (waitWhy === 'Slow mode' && waitUntil > now + chat.slowSecs * 1000) waitUntil = now + chat.slowSecs * 1000; // shortened or off
  const staff = iModerate();
  const timedOut = chat.timedOutUntil !== null && chat.timedOutUntil > now;
  const waiting = waitUntil > now;
  let closed = false;
  let note = '';
  let warn = false;
  if (!session.me || session.over) {
    closed = true;
    note = session.over ? 'Comments are closed.' : '';
  } else if (timedOut) {
    closed = true;
    warn = true;
    note = `You are timed out: ${clock(chat.timedOutUntil - now)} left`;
  } else if (!chat.enabled && !staff) {
    closed = true;
    note = 'Comments are off';
  } else if (waiting) {
    warn = true;
    note = `${waitWhy}: wait ${clock(waitUntil - now)}`;
  } else if (!chat.enabled) {
    note = 'Comments are off for viewers; you can still comment.';
  }
  const input = $('composer-text');
  input.disabled = closed;
  input.placeholder = closed && note ? note : 'Add a comment…';
  $('composer-send').disabled = closed || waiting;
  const n = $('composer-note');
  if (note || !n.classList.contains('error')) {
    n.textContent = note;
    n.className = `composer-note${warn ? ' warn' : ''}`;
  }
  // Once the session is over, nothing is left to send: the composer and the reactions go.
  $('side').classList.toggle('closed', !!session.over);
  $('comments-empty').textContent = session.over ? 'No comments.' : 'No comments yet. Say hello!';
  const mode = $('chat-mode');
  mode.hidden = !!session.over || (chat.enabled && !chat.slowSecs);
  mode.textContent = !chat.enabled ? 'Comments are off' : `Slow mode ${chat.slowSecs} s`;
  const counting = timedOut || waiting;
  if (counting && !ticker) ticker = setInterval(renderComposer, 1000);
  if (!counting && ticker) { clearInterval(ticker); ticker = null; }
}

function wait(ms, why) {
  waitUntil = Date.now() + ms;
  waitWhy = why;
  renderComposer();
}

// A refusal shown under the composer until the next keystroke.
function refuse(text) {
  const n = $('composer-note');
  n.textContent = text;
  n.className = 'composer-note error';
}

export function renderChat() {
  renderComments();
  renderComposer();
}

handlers.comment = (msg) => {
  const c = msg.comment;
  if (chat.comments.some((x) => x.id === c.id)) return;
  if (c.badge) setBadge(c.identity, c.badge); // the newest word on its author's badge
  chat.comments.push(c);
  if (chat.comments.length > MAX_SHOWN) chat.comments.shift();
  appendComment(c);
  if (c.identity !== session.me?.identity) return;
  // Ours came back: it is posted. Clear the box (unless more was typed since), and count down
  // slow mode from here.
  const input = $('composer-text');
  if (pendingText !== null && input.value === pendingText) input.value = '';
  pendingText = null;
  if (chat.slowSecs > 0 && !iModerate()) wait(chat.slowSecs * 1000, 'Slow mode');
};

// An author's badge changed (a payment, or a refund: null). Every comment of theirs on the page
// shows the new one, and so do their later comments, whether or not they carry it.
function setBadge(identity, badge) {
  chat.badges.set(identity, badge);
  for (const c of chat.comments) {
    if (c.identity !== identity) continue;
    const who = itemOf(c.id)?.querySelector('.who');
    if (!who) continue;
    who.querySelector('.supporter-badge')?.remove();
    if (badge) who.append(supporterBadge(badge));
  }
}

handlers.badge = (msg) => setBadge(msg.identity, msg.badge ?? null);

handlers.comment_deleted = (msg) => {
  chat.comments = chat.comments.filter((c) => c.id !== msg.id);
  if (openMenu === msg.id) openMenu = null;
  itemOf(msg.id)?.remove();
};

handlers.chat_status = (msg) => {
  chat.timedOutUntil = msg.timed_out_until ?? null;
  renderComposer();
};

handlers.reported = () => status('Reported. A moderator will take a look.');

// The messages of the conversation: a refusal of one of them (`request`) is shown here.
const REQUESTS = ['comment', 'delete_comment', 'react', 'moderate', 'chat_settings', 'get_blocked_words', 'set_blocked_words',
  'report', 'get_reports', 'resolve_report', 'get_audit_log', 'get_moderation_state'];
const COMMENT_CODES = ['bad_comment', 'comment_too_long', 'comments_off', 'slow_mode', 'timed_out'];

// An error about the conversation: shown here (true), or not ours (false).
export function chatError(msg) {
  if (!REQUESTS.includes(msg.request) && !COMMENT_CODES.includes(msg.code)) return false;
  pendingText = null; // the text stays in the box
  switch (msg.code) {
    case 'slow_mode': wait(msg.retry_after_ms ?? chat.slowSecs * 1000, 'Slow mode'); break;
    case 'rate_limited': wait(msg.retry_after_ms ?? 1000, 'Too fast'); break;
    case 'timed_out':
      chat.timedOutUntil = Date.now() + (msg.retry_after_ms ?? 0);
      renderComposer();
      break;
    case 'comments_off':
      chat.enabled = false;
      renderComposer();
      break;
    case 'bad_comment': case 'comment_too_long': refuse(sentence(msg.message)); break;
    default: status(sentence(msg.message));
  }
  return true;
}

export function wireChat() {
  const input = $('composer-text');
  $('composer').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || input.disabled) return;
    if (waitUntil > Date.now()) { renderComposer(); return; }
    pendingText = input.value;
    send({ type: 'comment', text });
  });
  input.addEventListener('input', () => {
    if ($('composer-note').classList.contains('error')) { $('composer-note').className = 'composer-note'; renderComposer(); }
  });
  const list = $('comments');
  list.addEventListener('scroll', () => { if (nearEnd(list)) $('comments-new').hidden = true; });
  $('comments-new').addEventListener('click', () => {
    list.scrollTop = list.scrollHeight;
    $('comments-new').hidden = true;
  });
  document.addEventListener('click', (e) => { if (openMenu !== null && !e.target.closest?.('.comment .actions')) closeMenu(); });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && openMenu !== null) closeMenu(); });
}
