// The session as a whole: joining (and joining again after a reconnect), leaving, and the end
// (the live ended, we left, or the join was refused).

import { applyJoined, applyResumed, applyResync, canPublish, closePeers, dropPublishing, endSession, notices, publisher, session, stopPublishing } from './state.js';
import { $, banner, flash, renderControls, renderHeader, renderNotices, sentence, setConn, stopLiveTimer } from './ui.js';
import { handlers, send } from './signal.js';
import { goLive, ownStageError, stopLocal } from './publish.js';
import { renderStage, renderStagePanel, stageError } from './stage.js';
import { sendQuality } from './subscribe.js';
import { chatError, renderChat } from './chat.js';
import { renderReactions } from './reactions.js';
import { fetchStaffState, renderModTools } from './moderation.js';
import { commerceError, fetchCommerce, renderCommerce } from './commerce.js';
import { loadSchedule, renderSchedule } from './schedule.js';
import { archiveLiveEnded, loadArchive, renderArchive } from './archive.js';
import { forgetRecovery, restartIce } from './path.js';

function renderRoom() {
  $('room').hidden = false;
  renderHeader();
  renderControls();
  renderStage();
  renderChat();
  renderReactions();
  renderModTools();
  renderStagePanel();
  renderNotices();
  renderCommerce();
  renderSchedule();
  renderArchive();
}

handlers.joined = async (msg) => {
  session.ready = true;
  if (msg.resumed) {
    // The same participant on a new connection: seat, tracks and peer connections as they were.
    applyResumed(msg);
    setConn('live', 'Connected');
    banner('');
    renderRoom();
    sendQuality();
    fetchStaffState();
    fetchCommerce();
    loadSchedule();
    loadArchive();
    // Resumed after our network changed: move the media onto the new path.
    restartIce();
    // "Go live" pressed while we were reconnecting: publish now.
    if (publisher.wantLive && !publisher.pc) await goLive();
    return;
  }
  // A fresh participant: the old connection's peer connections (kept in case of a resume) go.
  forgetRecovery();
  closePeers();
  // A seat the host gave us belonged to the old connection: after a reconnect we are a viewer
  // again (the server forgot it), so the camera stops instead of asking to publish.
  const lostSeat = publisher.wantLive && !canPublish(msg.participant.role);
  applyJoined(msg);
  setConn('live', 'Connected');
  banner('');
  if ($('invite-dialog').open) $('invite-dialog').close(); // an invitation of the old connection
  if (lostSeat) stopPublishing();
  renderRoom();
  sendQuality();
  fetchStaffState();
  fetchCommerce();
  loadSchedule();
  loadArchive();
  if (lostSeat) flash('The connection dropped and your seat on stage went with it. Ask to join again.', 8000);
  else if (publisher.wantLive) await goLive();
};

// Our connection fell behind and missed messages: the room as it is now replaces what we show
// (the media connections stay as they are; a missed offer comes again from the server).
handlers.resync = (msg) => {
  applyResync(msg);
  renderRoom();
  fetchStaffState();
};

// The host dropped: the live is held for them (every page shows it, with the grace left), and
// comes back when they rejoin (docs/protocol.md §6.2).
handlers.host_status = (msg) => {
  if (msg.state === 'reconnecting') notices.heldUntil = msg.grace_secs ? Date.now() + msg.grace_secs * 1000 : null;
  else notices.heldUntil = undefined;
  renderNotices();
  if (msg.state === 'back') flash('The host is back.', 4000);
};

// The duration cap nears (host and co-hosts).
handlers.room_warning = (msg) => {
  notices.warning = msg;
  renderNotices();
};

// The session is over for good (the live ended, we left, or the join was refused): stop the camera,
// clear the stage and the LIVE timer, keep the connection indicator on `connText`, and leave only
// the controls that still do something.
function finish(connText, message) {
  endSession(connText);
  stopLiveTimer();
  $('unmute').hidden = true;
  stopLocal(); // closes both peer connections and renders the (now empty) stage
  if ($('invite-dialog').open) $('invite-dialog').close();
  banner(message);
  setConn('offline', connText);
  renderHeader();
  renderControls();
  renderChat();
  renderReactions();
  renderModTools();
  renderStagePanel();
  renderNotices();
  renderCommerce();
  renderSchedule();
  // The host's Archive stays: the live's recording becomes a video now.
  if (connText === 'Ended') archiveLiveEnded(); else renderArchive();
}

// Banned from this live: the whole page says so and nothing reconnects (the server closes the
// socket with 4003 right after `kicked`, and refuses every later join with `banned`).
function removed(why) {
  session.ended = true;
  finish('Removed', '');
  for (const d of document.querySelectorAll('dialog[open]')) d.close();
  $('room').hidden = true;
  $('removed').hidden = false;
  $('removed-reason').textContent = why;
}

handlers.kicked = (msg) => removed(sentence(msg.reason || 'you were banned from this live'));

handlers.room_ended = (msg) => {
  session.ended = true;
  finish('Ended', `The live has ended${msg.reason && msg.reason !== 'the host ended the live' ? ` (${msg.reason})` : ''}.`);
};

handlers.error = (msg) => {
  console.warn('server error', msg.code, msg.message);
  if (msg.code === 'banned') {
    removed(`${sentence(msg.message)} You cannot join it again.`);
  } else if (chatError(msg)) {
    // shown in the comments panel
  } else if (commerceError(msg)) {
    // shown in the Shop panel
  } else if (stageError(msg) || ownStageError(msg)) {
    // shown in the stage panel, or as a notice
  } else if (msg.code.startsWith('token_') || msg.code === 'room_ended') {
    session.ended = true;
    finish(msg.code === 'room_ended' ? 'Ended' : 'Offline',
      msg.code === 'room_ended' ? 'The live has ended.' : `Cannot join: ${msg.message}`);
  } else if ((msg.request === 'publish' || !msg.request) && ['stage_full', 'room_not_live', 'not_allowed'].includes(msg.code)) {
    dropPublishing();
    flash(msg.message, 4000);
    renderControls();
    renderStage(); // no seat after all: our camera goes back to the preview below the stage
  } else if (msg.request) {
    flash(sentence(msg.message), 6000);
  }
};

export function wireSession() {
  $('leave').addEventListener('click', () => {
    session.leaving = true;
    send({ type: 'leave' });
    finish('Left', 'You left the room.');
  });
  $('rejoin').addEventListener('click', () => location.reload());
  $('end-live').addEventListener('click', () => send({ type: 'end_room' }));
}
