// One call to the server API (docs/api.md) with this page's own token: JSON in and out, or a
// raw body with its Content-Type (an image upload). A refusal throws ApiError with the server's
// status, code and message; an unreachable server is status 0, code `network`.

import { token } from './state.js';

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export async function apiCall(method, url, body = undefined, contentType = undefined) {
  const headers = { Authorization: `Bearer ${token}` };
  let payload = body;
  if (body !== undefined && contentType === undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  } else if (contentType) {
    headers['Content-Type'] = contentType;
  }
  let r;
  try {
    r = await fetch(url, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, 'network', 'the server could not be reached');
  }
  if (r.status === 204) return null;
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data?.error?.code ?? `http_${r.status}`, data?.error?.message ?? `the server answered ${r.status}`);
  return data;
}
