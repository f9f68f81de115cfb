// The host's studio feed dialog: stream keys for OBS / ffmpeg (RTMP).

import { state } from './state.js';
import { $ } from './ui.js';
import { send } from './signal.js';

export function renderKeys() {
  const list = $('studio-keys');
  list.replaceChildren();
  for (const k of state.streamKeys) {
    const li = document.createElement('li');
    li.textContent = `${k.label} · ${k.id}${k.revoked_at ? ' · revoked' : ''}`;
    if (!k.revoked_at) {
      const b = document.createElement('button');
      b.textContent = 'Revoke';
      b.addEventListener('click', () => send({ type: 'revoke_stream_key', id: k.id }));
      li.append(b);
    }
    list.append(li);
  }
}
