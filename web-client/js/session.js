// The session as a whole: the room view once joined, and its end (the live ended, we left, or the
// join was refused).

import { state } from './state.js';
import { $, banner, renderControls, renderHeader, setConn } from './ui.js';
import { stopLocal } from './publish.js';
import { renderStage } from './stage.js';

export function renderRoom() {
  $('room').hidden = false;
  renderHeader();
  renderControls();
  renderStage();
}

// The session is over for good (the live ended, we left, or the join was refused): stop the camera,
// clear the stage and the LIVE timer, keep the connection indicator on `connText`, and leave only
// the controls that still do something.
export function finish(connText, message) {
  state.over = connText;
  state.wantLive = false;
  clearInterval(state.timer);
  state.timer = null;
  if (state.room && connText === 'Ended') state.room = { ...state.room, state: 'ended' };
  state.tracks.clear();
  state.remoteStreams.clear();
  state.studio.clear();
  $('unmute').hidden = true;
  stopLocal(); // closes both peer connections and renders the (now empty) stage
  banner(message);
  setConn('offline', connText);
  renderHeader();
  renderControls();
}
