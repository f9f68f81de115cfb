// Moderation on the page: the moderators' items in each comment's menu (ban, time out,
// restrict, appoint), the host's and moderators' toolbar (comments on/off, slow mode), the
// reports queue and the host's audit log. The server decides who may do what (docs/protocol.md
// §13.3); the page offers what the role may do and shows what the server answered.

import { chat, moderates, session, updateParticipant } from './state.js';
import { $, renderControls } from './ui.js';
import { handlers, send } from './signal.js';
import { commentActions, nameOf, renderChat, renderComposer, roleOf, status } from './chat.js';
import { renderStage, renderStagePanel } from './stage.js';

const reports = new Map();   // open reports (host and moderators), by id
let audit = [];              // the audit log as last read, newest first (host)
// Who stands where in this live (host and moderators), as the server last listed it.
let standing = { moderators: new Set(), banned: new Set(), restricted: new Set(), timedOut: new Map() };

const myRole = () => session.me?.role;
const staff = () => moderates(myRole()) && !session.over;

const VERBS = {
  ban: 'banned', unban: 'unbanned', timeout: 'timed out', untimeout: 'ended the time-out of',
  restrict: 'restricted', unrestrict: 'unrestricted', add_moderator: 'made a moderator:',
  remove_moderator: 'removed as moderator:', delete_comment: 'deleted a comment by',
  chat_settings: 'changed the chat settings', blocked_words: 'changed the blocked words',
};

// "Hana Host banned Vera Viewer (spam)", from an audit entry.
function describe(e) {
  const who = e.actor === session.me?.identity ? 'You' : nameOf(e.actor);
  const target = e.target ? ` ${nameOf(e.target)}` : '';
  const detail = e.detail && e.action !== 'delete_comment' ? ` (${e.detail})` : '';
  return `${who} ${VERBS[e.action] ?? e.action}${target}${detail}`;
}

// The moderators' items: on viewers and co-hosts; the host's also on moderators. Each offers
// the way back once it is in force (Unban, End time-out, Unrestrict).
commentActions.push((c) => {
  const role = myRole();
  const who = c.identity;
  if (!staff() || who === session.me?.identity) return [];
  const author = roleOf(who, c.role);
  const isModerator = author === 'moderator' || standing.moderators.has(who);
  if (author === 'host' || (isModerator && role !== 'host')) return [];
  const act = (action, extra = {}) => () => send({ type: 'moderate', action, identity: who, ...extra });
  const items = [
    standing.banned.has(who) ? { label: 'Unban', run: act('unban') } : { label: 'Ban', danger: true, confirm: `Ban ${c.name}?`, run: act('ban') },
    (standing.timedOut.get(who) ?? 0) > Date.now() ? { label: 'End time-out', run: act('untimeout') }
      : { label: 'Time out 5 min', run: act('timeout', { minutes: 5 }) },
    standing.restricted.has(who) ? { label: 'Unrestrict', run: act('unrestrict') } : { label: 'Restrict', run: act('restrict') },
  ];
  if (role === 'host' && isModerator) items.push({ label: 'Remove moderator', run: act('remove_moderator') });
  else if (role === 'host' && author === 'viewer') items.push({ label: 'Make moderator', run: act('add_moderator') });
  return items;
});

export function renderModTools() {
  const on = staff();
  $('mod-tools').hidden = !on;
  $('mod-audit').hidden = myRole() !== 'host';
  const toggle = $('mod-comments');
  toggle.textContent = chat.enabled ? 'Comments on' : 'Comments off';
  toggle.setAttribute('aria-checked', String(chat.enabled));
  const slow = $('mod-slow');
  if (![...slow.options].some((o) => o.value === String(chat.slowSecs))) {
    slow.append(new Option(`${chat.slowSecs} s`, String(chat.slowSecs)));
  }
  slow.value = String(chat.slowSecs);
  $('mod-report-count').textContent = String(reports.size);
  $('mod-reports').classList.toggle('attention', reports.size > 0);
  if (!on) {
    for (const d of ['reports-dialog', 'audit-dialog']) if ($(d).open) $(d).close();
  }
  if (myRole() !== 'host' && $('audit-dialog').open) $('audit-dialog').close();
}

function button(label, onClick, cls = '') {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener('click', onClick);
  return b;
}

function renderReports() {
  const list = $('reports');
  list.replaceChildren(...[...reports.values()].map((r) => {
    const li = document.createElement('li');
    const what = document.createElement('p');
    what.className = 'what';
    const who = document.createElement('strong');
    who.textContent = r.comment ? `${r.comment.name}: ` : '';
    const text = document.createElement('span');
    text.textContent = r.comment ? r.comment.text : '(the comment is gone)';
    what.append(who, text);
    const meta = document.createElement('p');
    meta.className = 'meta';
    meta.textContent = `Reported by ${nameOf(r.reporter)}${r.reason ? `: ${r.reason}` : ''} · ${new Date(r.at).toLocaleTimeString()}`;
    const row = document.createElement('div');
    row.className = 'row';
    row.append(
      button('Dismiss', () => send({ type: 'resolve_report', id: r.id, action: 'dismiss' })),
      button('Delete comment', () => send({ type: 'resolve_report', id: r.id, action: 'delete' }), 'danger'),
    );
    li.append(what, meta, row);
    return li;
  }));
  $('reports-empty').hidden = reports.size > 0;
  renderModTools();
}

function renderAudit() {
  // A ban not lifted by a later unban (the log is newest first) can be lifted from here.
  const lifted = new Set();
  const items = audit.map((e) => {
    const li = document.createElement('li');
    const line = document.createElement('p');
    line.className = 'what';
    line.textContent = describe(e);
    const meta = document.createElement('p');
    meta.className = 'meta';
    meta.textContent = new Date(e.at).toLocaleString();
    li.append(line, meta);
    if (e.action === 'unban') lifted.add(e.target);
    if (e.action === 'ban' && !lifted.has(e.target)) {
      lifted.add(e.target);
      li.append(button('Unban', () => send({ type: 'moderate', action: 'unban', identity: e.target })));
    }
    return li;
  });
  $('audit').replaceChildren(...items);
  $('audit-empty').hidden = audit.length > 0;
}

// After a join, or once we become a moderator: the open reports and who stands where.
export function fetchStaffState() {
  reports.clear();
  renderReports();
  if (staff()) {
    send({ type: 'get_reports' });
    send({ type: 'get_moderation_state' });
  }
}

handlers.chat_settings = (msg) => {
  chat.enabled = msg.comments_enabled;
  chat.slowSecs = msg.slow_mode_secs;
  renderComposer();
  renderModTools();
};

handlers.participant_updated = (msg) => {
  const p = msg.participant;
  const wasStaff = staff();
  updateParticipant(p);
  if (p.id === session.me?.id && wasStaff !== staff()) {
    status(staff() ? 'The host made you a moderator of this live.' : 'You are no longer a moderator of this live.');
    if (staff()) fetchStaffState();
  }
  renderChat(); // badges, and the items each menu offers
  renderModTools();
  renderStage();
  renderStagePanel(); // on stage now, or a viewer again: the host's invite list follows
  renderControls();   // a seat makes us a co-host (stage_granted follows), off stage a viewer
};

handlers.moderation = (msg) => {
  const e = msg.entry;
  status(describe(e));
  if (e.target) send({ type: 'get_moderation_state' }); // the menus follow
  if (myRole() === 'host' && $('audit-dialog').open) {
    audit.unshift(e);
    renderAudit();
  }
};

handlers.report_filed = (msg) => { reports.set(msg.report.id, msg.report); renderReports(); };
handlers.report_resolved = (msg) => { reports.delete(msg.id); renderReports(); };
handlers.reports = (msg) => {
  reports.clear();
  for (const r of msg.reports) reports.set(r.id, r);
  renderReports();
};
handlers.audit_log = (msg) => { audit = msg.entries; renderAudit(); };
handlers.moderation_state = (msg) => {
  standing = { moderators: new Set(msg.moderators), banned: new Set(msg.banned), restricted: new Set(msg.restricted),
    timedOut: new Map(msg.timed_out.map((t) => [t.identity, t.until])) };
  renderChat(); // the menus (an open one is drawn again)
};

// For the test hook: the open reports as this page knows them.
export const openReports = () => [...reports.values()];

export function wireModeration() {
  $('mod-comments').addEventListener('click', () => send({ type: 'chat_settings', comments_enabled: !chat.enabled }));
  $('mod-slow').addEventListener('change', () => send({ type: 'chat_settings', slow_mode_secs: Number($('mod-slow').value) }));
  $('mod-reports').addEventListener('click', () => {
    send({ type: 'get_reports' });
    $('reports-dialog').showModal();
  });
  $('mod-audit').addEventListener('click', () => {
    send({ type: 'get_audit_log' });
    $('audit-dialog').showModal();
  });
  $('reports-close').addEventListener('click', () => $('reports-dialog').close());
  $('audit-close').addEventListener('click', () => $('audit-dialog').close());
}
