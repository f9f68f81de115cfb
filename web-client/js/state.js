// The page's state, shared by the other modules. Nothing here touches the DOM.

export const token = new URLSearchParams(location.search).get('token');

export const state = {
  claims: null,
  me: null,            // ParticipantInfo
  room: null,          // RoomInfo
  participants: new Map(), // id -> ParticipantInfo
  tracks: new Map(),   // track id -> TrackView
  ws: null,
  sub: null,
  pub: null,
  local: null,         // MediaStream (camera + mic)
  live: false,         // we publish
  wantLive: false,     // the user asked to publish (restored after reconnects)
  leaving: false,
  ended: false,
  over: null,          // the session is over: what the connection indicator keeps saying ('Ended', 'Left', 'Offline')
  previewing: null,    // the camera request in flight (one at a time)
  reconnectDelay: 500,
  timer: null,
  remoteStreams: new Map(), // participant id -> MediaStream
  audioBlocked: false,
  firstFrameAt: null,
  joins: 0,           // successful joins (reconnects add one each)
  lastPong: Date.now(),
  reconnectTimer: null,
  layersMax: 2,        // dynacast: highest simulcast layer anybody wants of ours
  quality: 'auto',
  statsWaiters: [],
  sentSizes: new Map(), // track id -> height last reported
  studio: new Map(),    // studio feed participant id -> 'live' | 'reconnecting'
  streamKeys: [],
};

export const isStudio = (p) => p?.identity?.startsWith('studio:');
