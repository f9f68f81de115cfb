// The live's shop and supporters on the page (docs/protocol.md §14, docs/api.md): the pinned
// product's card for everyone; for the host and moderators the Shop panel (the room's catalog over
// the server API with the page's own token, pins over the socket) and the Supporters panel (this
// live's payments and totals). The badges on comments are chat.js's.
//
// The server lets only http(s) URLs into the catalog; the page checks each URL again before it
// puts one in an href or a src. Product titles and supporters' names go in as textContent only.

import { commerce, moderates, session } from './state.js';
import { apiCall } from './api.js';
import { $, button, flash, sentence } from './ui.js';
import { handlers, send } from './signal.js';
import { supporterBadge } from './chat.js';
// Loaded before this module on purpose: its participant_updated handler is wrapped below.
import './moderation.js';

const REFRESH_MS = 5000; // the open Shop panel's views and clicks are read again this often

let products = [];       // the catalog as the API last listed it, with this live's views and clicks
let loadSeq = 0;         // answers of older list requests are dropped
let supporters = [];     // SupporterView (+ refunded) in the order they came
let totals = null;       // the live's totals, as the last supporter message said
let statusTimer = null;

const myRole = () => session.me?.role ?? session.claims?.role;
const staff = () => moderates(myRole()) && !!session.me && !session.over;

// Money: `minor` units of `currency` (4999 EUR = €49.99), in the reader's locale.
const formats = new Map();
function fractionDigits(currency) {
  try {
    return new Intl.NumberFormat('en', { style: 'currency', currency }).resolvedOptions().maximumFractionDigits;
  } catch { return 2; }
}
export function money(minor, currency) {
  const digits = fractionDigits(currency);
  const amount = Number(minor) / 10 ** digits;
  try {
    if (!formats.has(currency)) formats.set(currency, new Intl.NumberFormat(undefined, { style: 'currency', currency }));
    return formats.get(currency).format(amount);
  } catch {
    return `${amount.toFixed(digits)} ${currency}`;
  }
}

// An http(s) URL as the page may use it, or null; `media` also lets through the server's own
// uploaded images (/media/products/{id}?v=N).
function safeUrl(raw, media = false) {
  if (typeof raw !== 'string' || !raw) return null;
  if (media && /^\/media\/products\/[A-Za-z0-9_-]+(\?v=\d+)?$/.test(raw)) return raw;
  try {
    const u = new URL(raw);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch { return null; }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

// ---- The pinned product's card (everyone) ----

function renderCard() {
  const p = commerce.pinned;
  const href = p ? safeUrl(p.checkout_url) : null;
  const show = !!href && !!session.me && !session.over;
  $('product-card').hidden = !show;
  if (!show) return;
  const img = $('product-image');
  const src = safeUrl(p.image_url, true);
  img.hidden = !src || img.dataset.failed === src; // an image that did not load leaves no broken icon
  if (src && img.getAttribute('src') !== src) img.src = src;
  if (!src) img.removeAttribute('src');
  const price = money(p.price_minor, p.currency);
  $('product-title').textContent = p.title;
  $('product-title').title = p.title;
  $('product-price').textContent = price;
  const buy = $('product-buy');
  buy.href = href;
  buy.dataset.product = p.id;
  buy.setAttribute('aria-label', `Buy ${p.title}, ${price} (opens the shop in a new tab)`);
}

// The card rides on the tiles (the stage's grid: the CSS puts it over their bottom corner, or
// below them on a phone); with nobody on stage the stage is not drawn, so it waits below the
// "Nobody is on stage" line instead.
function placeCard() {
  const stage = $('stage');
  const card = $('product-card');
  if (stage.dataset.count === '0') {
    if (card.parentElement === stage) $('stage-empty').after(card);
  } else if (card.parentElement !== stage) {
    stage.append(card);
  }
}

// ---- The Shop panel (host and moderators) ----

function shopStatus(text, ms = 8000) {
  $('shop-status').textContent = text;
  clearTimeout(statusTimer);
  if (text) statusTimer = setTimeout(() => { $('shop-status').textContent = ''; }, ms);
}

// One call to the room's catalog (docs/api.md), as this page's host or moderator.
const api = (method, path = '', body = undefined, contentType = undefined) =>
  apiCall(method, `/api/v1/rooms/${encodeURIComponent(session.claims?.room ?? '')}/products${path}`, body, contentType);

async function loadProducts() {
  if (!staff()) return;
  const seq = ++loadSeq;
  try {
    const data = await api('GET');
    if (seq !== loadSeq) return;
    products = data.products ?? [];
  } catch (e) {
    if (seq === loadSeq) shopStatus(`Could not read the products: ${sentence(e.message)}`);
  }
  if (seq === loadSeq) renderShop();
}

async function remove(p) {
  try {
    await api('DELETE', `/${encodeURIComponent(p.id)}`);
    shopStatus(`Deleted “${p.title}”.`);
  } catch (e) {
    shopStatus(`Could not delete “${p.title}”: ${sentence(e.message)}`);
  }
  loadProducts();
}

function productItem(p) {
  const pinned = commerce.pinned?.id === p.id;
  const li = document.createElement('li');
  li.dataset.id = p.id;
  li.classList.toggle('pinned', pinned);
  const src = safeUrl(p.image_url, true);
  if (src) {
    const img = document.createElement('img');
    img.className = 'thumb';
    img.alt = '';
    img.referrerPolicy = 'no-referrer';
    img.src = src;
    li.append(img);
  }
  const info = document.createElement('div');
  info.className = 'info';
  const title = document.createElement('span');
  title.className = 'title';
  title.textContent = p.title;
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = `${money(p.price_minor, p.currency)} · ${plural(p.views ?? 0, 'view')} · ${plural(p.clicks ?? 0, 'click')}`;
  info.append(title, meta);
  if (pinned) {
    const tag = document.createElement('span');
    tag.className = 'pinned-tag';
    tag.textContent = 'Pinned';
    title.prepend(tag, ' ');
  }
  const row = document.createElement('div');
  row.className = 'row';
  row.append(
    pinned
      ? button('Unpin', () => send({ type: 'unpin_product' }), { aria: `Unpin ${p.title}`, key: `pin-${p.id}` })
      : button('Pin', () => send({ type: 'pin_product', product: p.id }), { cls: 'primary', aria: `Pin ${p.title}`, key: `pin-${p.id}` }),
    button('Delete', (e) => {
      // Deleting cannot be taken back: ask once more, in place.
      const b = e.currentTarget;
      if (!b.dataset.armed) {
        b.dataset.armed = '1';
        b.textContent = 'Delete?';
        b.setAttribute('aria-label', `Really delete ${p.title}?`);
        return;
      }
      remove(p);
    }, { cls: 'danger', aria: `Delete ${p.title}`, key: `delete-${p.id}` }),
  );
  li.append(info, row);
  return li;
}

function renderShop() {
  const show = staff();
  $('commerce-tools').hidden = !show;
  if (!show) {
    if ($('product-dialog').open) $('product-dialog').close();
    return;
  }
  $('shop-count').textContent = String(products.length);
  const pinned = commerce.pinned;
  $('shop-pinned').hidden = !pinned;
  const label = `Shop: ${plural(products.length, 'product')}${pinned ? `, “${pinned.title}” pinned` : ''}`;
  $('shop-toggle').title = label;
  $('shop-toggle').setAttribute('aria-label', label);
  // Drawn again from scratch: the keyboard focus goes back to the same product's button.
  const focused = document.activeElement?.closest?.('#shop-list') ? document.activeElement.dataset.key : null;
  $('shop-list').replaceChildren(...products.map(productItem));
  $('shop-empty').hidden = products.length > 0;
  if (focused) $('shop-list').querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus({ preventScroll: true });
}

// The add form's refusals: the server's message, in words, next to the field it names.
const FIELDS = { title: 'shop-title', price_minor: 'shop-price', currency: 'shop-currency', image_url: 'shop-image-url',
  checkout_url: 'shop-checkout', image: 'shop-image-file' };
const LABELS = { title: 'Title', price_minor: 'Price', currency: 'Currency', image_url: 'Image URL', checkout_url: 'Checkout URL' };

function formError(text, field = null) {
  const box = $('shop-form-error');
  box.hidden = !text;
  box.textContent = text ?? '';
  for (const id of Object.values(FIELDS)) $(id).removeAttribute('aria-invalid');
  if (field && FIELDS[field]) {
    const input = $(FIELDS[field]);
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', 'shop-form-error');
    input.focus();
  }
}

// "checkout_url: only http and https URLs are allowed" -> ("Checkout URL: only http … allowed.", checkout_url)
function explain(e) {
  const m = /^([a-z_]+)\b/.exec(e.message);
  if (m && LABELS[m[1]]) return [sentence(`${LABELS[m[1]]}${e.message.slice(m[1].length)}`), m[1]];
  if (e.code === 'bad_image' || e.code === 'message_too_large') return [sentence(e.message), 'image'];
  return [sentence(e.message), null];
}

async function addProduct(ev) {
  ev.preventDefault();
  formError(null);
  const currency = $('shop-currency').value.trim().toUpperCase();
  const price = Number($('shop-price').value);
  if ($('shop-price').value === '' || !Number.isFinite(price) || price < 0) {
    formError('Price: enter an amount such as 19.99.', 'price_minor');
    return;
  }
  const body = {
    title: $('shop-title').value.trim(),
    price_minor: Math.round(price * 10 ** fractionDigits(currency)),
    currency,
    checkout_url: $('shop-checkout').value.trim(),
  };
  const file = $('shop-image-file').files[0] ?? null;
  const imageUrl = $('shop-image-url').value.trim();
  if (imageUrl && !file) body.image_url = imageUrl;
  const submit = $('shop-submit');
  submit.disabled = true;
  submit.textContent = 'Adding…';
  try {
    const p = await api('POST', '', body);
    let imageRefused = null;
    if (file) {
      try {
        await api('PUT', `/${encodeURIComponent(p.id)}/image`, file, file.type || 'application/octet-stream');
      } catch (e) { imageRefused = e; }
    }
    $('shop-form').reset();
    $('shop-currency').value = currency;
    if (imageRefused) {
      // Added all the same: the dialog stays open to say why the image is missing.
      formError(`“${p.title}” was added without its image: ${explain(imageRefused)[0]}`, 'image');
    } else {
      $('product-dialog').close();
    }
    shopStatus(`Added “${p.title}”. Pin it to show it on everyone's stage.`);
  } catch (e) {
    formError(...explain(e));
  } finally {
    submit.disabled = false;
    submit.textContent = 'Add product';
    loadProducts();
  }
}

// ---- The Supporters panel (host and moderators) ----

function renderSupporters() {
  if (!staff()) return;
  const t = totals;
  $('supporters-count').textContent = String(t?.supporters ?? 0);
  const label = `Supporters: ${t?.supporters ?? 0}${t && t.payments ? `, ${money(t.amount_minor, t.currency)}` : ''}`;
  $('supporters-toggle').title = label;
  $('supporters-toggle').setAttribute('aria-label', label);
  // "1 supporter, 1 payment: $2.99." over "Supporter 0 · Fan 1 · Superfan 0" (a tier and its count never apart).
  const byTier = document.createElement('span');
  byTier.className = 'by-tier';
  byTier.textContent = (t?.by_tier ?? []).map((n, i) => `${commerce.tiers[i]?.name ?? `Tier ${i + 1}`}\u00a0${n}`).join(' · ');
  $('supporters-totals').replaceChildren(...(t && t.payments
    ? [`${plural(t.supporters, 'supporter')}, ${plural(t.payments, 'payment')}: ${money(t.amount_minor, t.currency)}. `, byTier]
    : []));
  $('supporters-empty').hidden = supporters.length > 0;
  $('supporters-list').replaceChildren(...supporters.slice().reverse().map((s) => {
    const li = document.createElement('li');
    li.classList.toggle('refunded', !!s.refunded);
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = s.name || s.identity;
    who.title = s.identity;
    const meta = document.createElement('span');
    meta.className = 'meta';
    const when = new Date(s.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    meta.textContent = `${money(s.amount_minor, s.currency)} · ${when}${s.refunded ? ' · refunded' : ''}`;
    li.append(who, supporterBadge({ tier: s.tier, name: s.tier_name }), meta);
    return li;
  }));
}

// A new supporter while the panel is closed: its count says so until it is opened.
function noteNewSupporter() {
  if ($('supporters-panel').hidden) $('supporters-count').classList.add('attention');
}

// The panels share the room below their buttons: one open at a time, each closed again by its
// own button (schedule.js's panel is one of them).
const PANELS = { 'shop-toggle': 'shop-panel', 'supporters-toggle': 'supporters-panel', 'schedule-toggle': 'schedule-panel' };
export function toggle(button, opened) {
  const open = $(PANELS[button]).hidden;
  for (const [b, panel] of Object.entries(PANELS)) {
    const mine = b === button && open;
    $(panel).hidden = !mine;
    $(b).setAttribute('aria-expanded', String(mine));
  }
  if (open) opened();
}

// ---- Server messages ----

handlers.product_pinned = (msg) => {
  if (commerce.pinned?.id !== msg.product.id) shopStatus(''); // "pin it …" is done
  commerce.pinned = msg.product;
  renderCard();
  renderShop();
  loadProducts(); // the views start counting
};

handlers.product_unpinned = (msg) => {
  if (!commerce.pinned || commerce.pinned.id === msg.product) commerce.pinned = null;
  renderCard();
  renderShop();
  loadProducts();
};

handlers.products_changed = () => loadProducts();

handlers.supporters = (msg) => {
  supporters = msg.supporters ?? [];
  totals = msg.totals ?? null;
  renderSupporters();
};

handlers.supporter = (msg) => {
  if (!supporters.some((s) => s.payment === msg.supporter.payment)) supporters.push(msg.supporter);
  totals = msg.totals ?? totals;
  noteNewSupporter();
  renderSupporters();
};

handlers.supporter_refunded = (msg) => {
  const s = supporters.find((x) => x.payment === msg.payment);
  if (s) s.refunded = true;
  totals = msg.totals ?? totals;
  renderSupporters();
};

// Made or unmade a moderator during the live: the panels come or go (moderation.js handles the
// message; this runs after it).
const roleUpdated = handlers.participant_updated;
handlers.participant_updated = async (msg) => {
  const was = staff();
  await roleUpdated?.(msg);
  if (was !== staff()) fetchCommerce();
};

// After a join, or once we moderate: the catalog and the supporters; without the role, nothing.
export function fetchCommerce() {
  products = [];
  supporters = [];
  totals = null;
  renderCommerce();
  if (!staff()) return;
  const cur = commerce.tiers[0]?.currency;
  if (cur && !$('shop-price').value && !$('shop-title').value) $('shop-currency').value = cur;
  loadProducts();
  send({ type: 'get_supporters' });
}

export function renderCommerce() {
  renderCard();
  renderShop();
  renderSupporters();
}

// The shop's requests over the socket: a refusal is shown in the Shop panel (true), or is not ours (false).
const REQUESTS = ['pin_product', 'unpin_product', 'product_click', 'get_supporters'];
export function commerceError(msg) {
  if (!REQUESTS.includes(msg.request)) return false;
  // A tap on a card that was unpinned a moment ago: nothing to tell anybody.
  if (msg.request === 'product_click') return true;
  if ($('shop-panel').hidden || $('commerce-tools').hidden) flash(sentence(msg.message), 6000);
  else shopStatus(sentence(msg.message));
  return true;
}

export function wireCommerce() {
  $('product-buy').addEventListener('click', (e) => {
    const id = e.currentTarget.dataset.product;
    if (id) send({ type: 'product_click', product: id }); // the link itself opens the checkout
  });
  $('product-image').addEventListener('error', () => {
    $('product-image').dataset.failed = $('product-image').getAttribute('src');
    $('product-image').hidden = true;
  });
  $('shop-new').addEventListener('click', () => {
    formError(null);
    $('product-dialog').showModal();
  });
  $('shop-cancel').addEventListener('click', () => $('product-dialog').close());
  $('shop-form').addEventListener('submit', addProduct);
  // Editing a field clears the refusal about it.
  $('shop-form').addEventListener('input', (e) => {
    if (e.target.getAttribute?.('aria-invalid')) formError(null);
    if (e.target.id === 'shop-image-file' && e.target.files.length) $('shop-image-url').value = '';
    if (e.target.id === 'shop-image-url' && e.target.value) $('shop-image-file').value = '';
  });
  // The price's step follows the currency's minor unit (0.01 USD, 1 JPY).
  $('shop-currency').addEventListener('change', () => {
    $('shop-price').step = String(10 ** -fractionDigits($('shop-currency').value.trim().toUpperCase()));
  });
  $('shop-toggle').addEventListener('click', () => toggle('shop-toggle', loadProducts));
  $('supporters-toggle').addEventListener('click', () => toggle('supporters-toggle',
    () => $('supporters-count').classList.remove('attention')));
  setInterval(() => { if (!$('shop-panel').hidden && staff()) loadProducts(); }, REFRESH_MS);
  new MutationObserver(placeCard).observe($('stage'), { attributes: true, attributeFilter: ['data-count'] });
  placeCard();
}
