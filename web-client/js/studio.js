// The host's studio feed (RTMP from OBS, vMix or ffmpeg): minting and revoking stream keys in
// the dialog, and what the server says about a running feed.

import { setStudioFeed } from './state.js';
import { $, flash } from './ui.js';
import { handlers, send } from './signal.js';
import { renderStage } from './stage.js';

let streamKeys = []; // the host's keys, as the server last listed them

function renderKeys() {
  const list = $('studio-keys');
  list.replaceChildren();
  for (const k of streamKeys) {
    const li = document.createElement('li');
    li.textContent = `${k.label} · ${k.id}${k.seat === 'host' ? ' · host seat' : ''}${k.revoked_at ? ' · revoked' : ''}`;
    if (!k.revoked_at) {
      const b = document.createElement('button');
      b.textContent = 'Revoke';
      b.addEventListener('click', () => send({ type: 'revoke_stream_key', id: k.id }));
      li.append(b);
    }
    list.append(li);
  }
}

// A new key is shown once, with the server URL to paste into the encoder.
handlers.stream_key = (msg) => {
  $('studio-new').hidden = false;
  $('studio-url').value = msg.server_url;
  $('studio-key').value = msg.key;
  send({ type: 'list_stream_keys' });
};
handlers.stream_keys = (msg) => { streamKeys = msg.keys; renderKeys(); };
handlers.stream_key_revoked = () => send({ type: 'list_stream_keys' });

handlers.studio_state = (msg) => { setStudioFeed(msg.participant, msg.state); renderStage(); };
handlers.studio_notice = (msg) => flash(`Studio feed: ${msg.message}`, 12_000);

export function wireStudio() {
  $('studio').addEventListener('click', () => {
    $('studio-new').hidden = true;
    $('studio-key').value = '';
    send({ type: 'list_stream_keys' });
    $('studio-dialog').showModal();
  });
  $('studio-create').addEventListener('click', () => {
    // Co-host seat (default): the feed joins the host's live. Host seat: the encoder starts the
    // live by itself, and its drop holds the live like the host's browser would.
    const seat = document.querySelector('input[name="studio-seat"]:checked')?.value ?? 'cohost';
    send({ type: 'create_stream_key', label: $('studio-label').value.trim(), seat });
  });
  $('studio-close').addEventListener('click', () => $('studio-dialog').close());
}
