// The session as a whole: joining (and joining again after a reconnect), leaving, and the end
// (the live ended, we left, or the join was refused).

import { applyJoined, dropPublishing, endSession, publisher, session } from './state.js';
import { $, banner, flash, renderControls, renderHeader, sentence, setConn, stopLiveTimer } from './ui.js';
import { handlers, send } from './signal.js';
import { goLive, stopLocal } from './publish.js';
import { renderStage } from './stage.js';
import { sendQuality } from './subscribe.js';
import { chatError, renderChat } from './chat.js';
import { renderReactions } from './reactions.js';
import { fetchStaffState, renderModTools } from './moderation.js';

function renderRoom() {
  $('room').hidden = false;
  renderHeader();
  renderControls();
  renderStage();
  renderChat();
  renderReactions();
  renderModTools();
}

handlers.joined = async (msg) => {
  applyJoined(msg);
  setConn('live', 'Connected');
  banner('');
  renderRoom();
  sendQuality();
  fetchStaffState();
  if (publisher.wantLive) await goLive();
};

// The session is over for good (the live ended, we left, or the join was refused): stop the camera,
// clear the stage and the LIVE timer, keep the connection indicator on `connText`, and leave only
// the controls that still do something.
function finish(connText, message) {
  endSession(connText);
  stopLiveTimer();
  $('unmute').hidden = true;
  stopLocal(); // closes both peer connections and renders the (now empty) stage
  banner(message);
  setConn('offline', connText);
  renderHeader();
  renderControls();
  renderChat();
  renderReactions();
  renderModTools();
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
  } else if (msg.code.startsWith('token_') || msg.code === 'room_ended') {
    session.ended = true;
    finish(msg.code === 'room_ended' ? 'Ended' : 'Offline',
      msg.code === 'room_ended' ? 'The live has ended.' : `Cannot join: ${msg.message}`);
  } else if (msg.code === 'stage_full' || msg.code === 'room_not_live' || msg.code === 'not_allowed') {
    dropPublishing();
    flash(msg.message, 4000);
    renderControls();
    renderStage(); // no seat after all: our camera goes back to the preview below the stage
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
