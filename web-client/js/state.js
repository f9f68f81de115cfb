// The state that more than one module reads, grouped by concern, and the changes that touch
// several fields at once (so a handler cannot do half of one). State that only one module uses
// lives in that module. Nothing here touches the DOM.

export const token = new URLSearchParams(location.search).get('token');

// Who we are and where our session stands.
export const session = {
  claims: null,   // the token's claims, read before joining: the role decides the view
  me: null,       // ParticipantInfo, once joined
  joins: 0,       // successful joins (reconnects add one each)
  resyncs: 0,     // times the server sent the room again after our connection fell behind
  resumes: 0,     // joins that continued our participant on a new connection (counted in joins too)
  ready: false,   // joined on the current WebSocket (a publish before that would race the join)
  leaving: false, // we pressed Leave
  ended: false,   // the room ended or the join was refused: no more reconnects
  over: null,     // once over, what the connection indicator keeps saying ('Ended', 'Left', 'Offline')
};

// The room as the server last described it.
export const room = {
  info: null,              // RoomInfo
  participants: new Map(), // participant id -> ParticipantInfo
  tracks: new Map(),       // track id -> TrackView
  studioFeeds: new Map(),  // studio feed participant id -> 'live' | 'reconnecting'
  profile: null,           // the live's profile (joined.profile, live_profile): layers, playout delay
};

// The way onto the stage without a co-host token (docs/protocol.md §6.1).
export const stageMoves = {
  request: null,            // our request: { state: 'pending' | 'declined', position }
  granted: false,           // the host gave us a seat (a request or an invitation): we publish into it
  invite: null,             // ParticipantInfo of the host whose invitation waits for our answer
  queue: [],                // the requests, oldest first (host; moderators when allowed)
  managing: false,          // we receive the queue
  moderatorsManage: false,  // the host lets moderators answer requests
  invites: new Map(),       // host: participant id -> 'sent' | 'accepted' | 'declined' | 'failed'
};

// What the live says about itself: held for its host (§6.2), the duration cap's warning, and our
// video paused for bandwidth (§6.3).
export const notices = {
  heldUntil: undefined, // held: until when (unix ms), null if not known; undefined when not held
  warning: null,        // the last room_warning
  audioOnly: false,
};

// The signaling socket and its recovery.
export const link = {
  ws: null,
  resumeToken: null, // from `joined`: a new connection sends it to continue as the same participant
  reconnectDelay: 500,
  reconnectTimer: null,
  lastPong: Date.now(),
  lastMessageAt: Date.now(), // when the server last sent anything (path.js reads it)
  // Many nodes: the node a `redirect` sent us to (its WebSocket URL; null: the page's own
  // server), and how many redirects in a row (a loop stops after three).
  wsUrl: null,
  redirects: 0,
  redirectNow: false,
};

// Our camera and microphone, and the peer connection that sends them.
export const publisher = {
  local: null,      // MediaStream (camera + mic)
  previewing: null, // the camera request in flight (one at a time)
  pc: null,
  live: false,      // we publish
  wantLive: false,  // the user asked to publish (restored after reconnects)
  layersMax: 2,     // dynacast: highest simulcast layer anybody wants of ours
};

// Everyone else's media, and the peer connection that receives it.
export const subscriber = {
  pc: null,
  streams: new Map(),   // participant id -> MediaStream
  sentSizes: new Map(), // track id -> height last reported
  quality: 'auto',
  audioBlocked: false,
  firstFrameAt: null,
};

// The live's conversation as the server last described it (comments, settings, our standing).
export const chat = {
  comments: [],        // CommentView, oldest first: what this page shows
  enabled: true,       // comments on for viewers
  slowSecs: 0,         // slow mode: seconds between a viewer's comments (0 = off)
  emoji: [],           // the reactions `react` accepts
  totals: {},          // reactions so far in this live, per emoji
  timedOutUntil: null, // unix ms while a moderator has timed us out
  badges: new Map(),   // identity -> supporter badge ({tier, name}, or null once refunded) from `badge` messages
};

// The live's shop and supporters as the server last described them (docs/protocol.md §14).
export const commerce = {
  liveId: null,   // the live's id (the API's /api/v1/lives/{id})
  pinned: null,   // the pinned ProductView every page shows as a card, or null
  tiers: [],      // the badge tiers, cheapest first: [{ tier, name, price_minor, currency }]
};

// Whether a role moderates the conversation (the server decides; this only picks the view).
export const moderates = (role) => role === 'host' || role === 'moderator';

// Studio feeds (RTMP encoders) come with kind "studio" on their participant object.
export const isStudio = (p) => p?.kind === 'studio';

// The room as the server describes it in `joined`, `resync` and a resumed `joined`: who is
// here, the tracks, the conversation, the shop, the profile, whether the live is held.
function showRoom(msg) {
  session.me = msg.participant;
  room.info = msg.room;
  room.participants = new Map(msg.participants.map((p) => [p.id, p]));
  room.participants.set(msg.participant.id, msg.participant);
  room.tracks = new Map(msg.tracks.map((t) => [t.id, t]));
  const c = msg.chat ?? {};
  chat.comments = c.comments ?? [];
  chat.enabled = c.comments_enabled ?? true;
  chat.slowSecs = c.slow_mode_secs ?? 0;
  chat.emoji = c.emoji ?? [];
  chat.totals = c.reactions ?? {};
  chat.timedOutUntil = c.timed_out_until ?? null;
  chat.badges.clear(); // the history carries each author's badge as it stands now
  commerce.liveId = c.live_id ?? null;
  commerce.pinned = c.pinned_product ?? null;
  commerce.tiers = c.tiers ?? [];
  room.profile = msg.profile ?? null;
  notices.heldUntil = msg.room.state === 'held' ? (notices.heldUntil ?? null) : undefined;
}

// A join (the first or after a reconnect): the server's view replaces ours.
export function applyJoined(msg) {
  link.resumeToken = msg.resume_token ?? null;
  link.reconnectDelay = 500;
  link.redirects = 0;
  link.lastPong = Date.now();
  session.joins += 1;
  showRoom(msg);
  subscriber.streams.clear();
  subscriber.sentSizes.clear();
  publisher.layersMax = 2;
  // A new connection: requests, invitations and seats of the old one are gone (the server forgot them).
  Object.assign(stageMoves, { request: null, granted: false, invite: null, queue: [], managing: false });
  stageMoves.invites.clear();
  notices.audioOnly = false;
}

// The server dropped messages for us (our connection fell behind) and sent the room as it is
// now (docs/protocol.md, resync). Unlike a join, the connection and its media stay: only what the
// page shows is replaced. The stage's queue, our request and an invitation come right after.
export function applyResync(msg) {
  if (msg.type === 'resync') session.resyncs += 1;
  showRoom(msg);
  for (const id of [...subscriber.streams.keys()]) if (!room.tracks.has(id)) subscriber.streams.delete(id);
  Object.assign(stageMoves, { request: null, invite: null, queue: [] });
}

// A new connection took over our participant (`joined` with `resumed`): the same seat, tracks
// and peer connections; the room is shown as it is now, as after a resync.
export function applyResumed(msg) {
  link.resumeToken = msg.resume_token ?? null;
  link.reconnectDelay = 500;
  link.lastPong = Date.now();
  session.joins += 1;
  session.resumes += 1;
  applyResync(msg);
}

// Roles that publish (the token's, or a viewer the host brought on stage).
export const canPublish = (role) => role === 'host' || role === 'cohost';

// A participant's role changed (made or unmade moderator): ours too, if it is us.
export function updateParticipant(p) {
  if (room.participants.has(p.id)) room.participants.set(p.id, p);
  if (session.me?.id === p.id) session.me = p;
}

export function removeParticipant(id) {
  room.participants.delete(id);
  room.studioFeeds.delete(id);
  subscriber.streams.delete(id);
  // Whatever its tracks did, nobody who left keeps a tile.
  for (const [trackId, t] of room.tracks) if (t.participant === id) room.tracks.delete(trackId);
}

export function setStudioFeed(id, feedState) {
  if (feedState === 'ended') room.studioFeeds.delete(id); else room.studioFeeds.set(id, feedState);
}

export function closePeers() {
  if (subscriber.pc) { subscriber.pc.close(); subscriber.pc = null; }
  if (publisher.pc) { publisher.pc.close(); publisher.pc = null; }
  publisher.live = false;
}

// Off stage (taken off, stepped down, or the seat lost with the connection): the publisher
// connection and the camera stop; the subscriber connection goes on.
export function stopPublishing() {
  publisher.wantLive = false;
  publisher.live = false;
  stageMoves.granted = false;
  if (publisher.pc) { publisher.pc.close(); publisher.pc = null; }
  if (publisher.local) { publisher.local.getTracks().forEach((t) => t.stop()); publisher.local = null; }
}

// The server refused to put us on stage: stop asking, keep the camera.
export function dropPublishing() {
  publisher.wantLive = false;
  publisher.live = false;
  if (publisher.pc) { publisher.pc.close(); publisher.pc = null; }
}

// The session is over for good; `connText` is what the indicator keeps saying.
export function endSession(connText) {
  session.over = connText;
  publisher.wantLive = false;
  if (room.info && connText === 'Ended') room.info = { ...room.info, state: 'ended' };
  room.tracks.clear();
  room.studioFeeds.clear();
  subscriber.streams.clear();
  Object.assign(stageMoves, { request: null, granted: false, invite: null, queue: [], managing: false });
  Object.assign(notices, { heldUntil: undefined, warning: null, audioOnly: false });
  commerce.pinned = null;
}
