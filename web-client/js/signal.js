// The signaling WebSocket: connect and join, send, hand each server message to the module that
// owns it, and start over when the socket or the path to the server goes away.

import { closePeers, link, publisher, session, token } from './state.js';
import { flash, setConn } from './ui.js';

// Server message type -> handler. Each module registers the messages it owns when it loads
// (`handlers[type] = fn`); a handler may be async.
export const handlers = Object.create(null);

async function dispatch(msg) {
  const handle = handlers[msg.type];
  if (!handle) { console.warn('unknown server message', msg.type); return; }
  await handle(msg);
}

export function send(msg) {
  if (link.ws && link.ws.readyState === WebSocket.OPEN) link.ws.send(JSON.stringify(msg));
}

export function connect() {
  clearTimeout(link.reconnectTimer);
  session.ready = false;
  setConn(session.me ? 'reconnecting' : 'connecting', session.me ? 'Reconnecting…' : 'Connecting…');
  const old = link.ws;
  const ws = new WebSocket(link.wsUrl ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
  link.ws = ws;
  // Never two sessions at once; 4000 tells the server the participant will be resumed.
  if (old && old.readyState <= WebSocket.OPEN) old.close(link.resumeToken ? 4000 : 1000);
  // After a drop, the resume token continues the same participant (its peer connections are
  // kept meanwhile); the server answers a fresh `joined` when it cannot (docs/protocol.md §3.5).
  let opened = false;
  ws.onopen = () => {
    opened = true;
    send({ type: 'join', token, protocol: 1, ...(link.resumeToken ? { resume: link.resumeToken } : {}) });
  };
  ws.onmessage = (ev) => {
    link.lastMessageAt = Date.now();
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    dispatch(msg).catch((e) => console.error('handling', msg.type, e));
  };
  ws.onclose = () => {
    if (link.ws !== ws) return;
    // The close that follows room_ended or a leave must not turn "Ended" / "Left" into "Offline".
    if (session.leaving || session.ended) { closePeers(); setConn('offline', session.over || 'Offline'); return; }
    // The peer connections stay up while we reconnect: a resume keeps them (media never
    // stopped); a fresh join closes them first (session.js).
    setConn('reconnecting', 'Reconnecting…');
    // The node we were sent to does not answer (it died, or was taken out): back to the page's
    // own server, which knows where the live is now.
    if (!opened && link.wsUrl) link.wsUrl = null;
    if (link.redirectNow) { link.redirectNow = false; connect(); return; }
    const delay = link.reconnectDelay;
    link.reconnectDelay = Math.min(delay * 2, 5000);
    link.reconnectTimer = setTimeout(connect, delay);
  };
}

// Full restart of both connections through a fresh WebSocket session: the peer connections go,
// so the next join is a fresh one, never a resume of the participant they belonged to.
export function restart(why) {
  console.info('restarting:', why);
  link.resumeToken = null;
  closePeers();
  const ws = link.ws;
  if (ws && ws.readyState <= WebSocket.OPEN) {
    ws.close(); // onclose schedules the reconnect
  } else {
    connect();
  }
}

// The signaling path is gone (no pong, the browser went offline or came back): a new WebSocket,
// the peer connections kept — the join resumes the same participant when the server still has
// it, and media may never have stopped.
export function reconnect(why) {
  console.info('reconnecting:', why);
  const ws = link.ws;
  if (ws && ws.readyState <= WebSocket.OPEN) {
    ws.close(4000, 'reconnecting'); // 4000: the server keeps our participant for the resume; onclose schedules the reconnect
  } else {
    connect();
  }
}

handlers.pong = () => { link.lastPong = Date.now(); };

// Many nodes (docs/protocol.md, redirect): the room's live is on another node; join there at
// once with the same token (the server closes this socket). Three in a row without a join is a
// loop: then the usual backoff retries where we are.
handlers.redirect = (msg) => {
  link.redirects += 1;
  if (link.redirects > 3 || typeof msg.url !== 'string' || !/^wss?:\/\//.test(msg.url)) return;
  console.info('redirected to node', msg.node);
  link.wsUrl = msg.url;
  link.redirectNow = true;
};

// The server is being stopped (docs/protocol.md, server_draining): this live goes on until it ends.
handlers.server_draining = () => flash('The server is being restarted after this live; keep watching.', 8000);

handlers.connection_state = (msg) => {
  // Off stage, the server closes our publisher connection: that one is not a loss.
  if (msg.target === 'publisher' && !publisher.wantLive) return;
  if ((msg.state === 'failed' || msg.state === 'closed') && !session.leaving) restart('media connection lost');
};

export function keepAlive() {
  // Keepalive and silent-drop detection: a ping every 5 s; no pong for 12 s means the path is
  // gone even if the socket still looks open, so connect again.
  setInterval(() => {
    if (!link.ws || link.ws.readyState !== WebSocket.OPEN || session.leaving || session.ended) return;
    if (Date.now() - link.lastPong > 12_000) { reconnect('no pong'); return; }
    send({ type: 'ping', ts: Date.now() });
  }, 5_000);
  // The browser knows when the network goes and comes back (Wi-Fi to cellular, a tunnel).
  window.addEventListener('offline', () => {
    if (session.leaving || session.ended) return;
    setConn('reconnecting', 'Offline');
    reconnect('browser went offline');
  });
  window.addEventListener('online', () => {
    if (session.leaving || session.ended) return;
    link.reconnectDelay = 500;
    reconnect('browser back online');
  });
}
