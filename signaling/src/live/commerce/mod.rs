//! Supporters and live shopping (docs/protocol.md §14, docs/api.md): badges granted by the
//! platform's payment webhook, shown on their holder's comments, listed for the host; products
//! of the room's catalog pinned over the video, their views and clicks counted per live.
//!
//! The store is written first, then the room's working copy ([`Commerce`]) changes and who needs
//! to know is told. Locks as in the conversation: the room's lock in one block with no await,
//! the store awaited with none held (docs/architecture.md §6.1).

pub mod catalog;
pub mod payments;
pub mod state;

pub use state::Commerce;

use crate::app::AppState;
use crate::config::CommerceConfig;
use crate::error::{AppError, ErrorCode};
use crate::live::chat::moderates;
use crate::live::ctx::Ctx;
use crate::live::room::{Rooms, lock};
use crate::protocol::{BadgeView, ProductView, RoomState, ServerMsg, SupporterView};
use crate::store::{PaymentRow, Recorded, Refunded, Store, unix_ms};
use payments::Event;
use std::time::Instant;

/// The sender's live, when the sender is the host or a moderator.
fn staff(ctx: &Ctx<'_>, what: &str) -> Result<String, AppError> {
    let r = lock(ctx.room);
    let role = r.role_of(ctx.id).ok_or_else(|| AppError::new(ErrorCode::NotFound, "not in this room"))?;
    if !moderates(role) {
        return Err(AppError::new(ErrorCode::NotAllowed, format!("only the host and moderators {what}")));
    }
    Ok(r.chat.live_id.clone())
}

/// `pin_product`: show a product of the room's catalog to everyone.
pub async fn pin(ctx: &Ctx<'_>, product: String) -> Result<(), AppError> {
    let live = staff(ctx, "pin products")?;
    let row = ctx
        .app
        .store
        .product(&ctx.claims.room, &product)
        .await?
        .ok_or_else(|| AppError::new(ErrorCode::NotFound, "no such product in this room's catalog"))?;
    ctx.app.store.set_pinned(&live, Some(&row.id)).await?;
    let view = catalog::view(&row);
    let mut r = lock(ctx.room);
    r.commerce.pin(view.clone());
    let shown = r.audience();
    r.commerce.viewed(shown);
    r.broadcast_all(ServerMsg::ProductPinned { product: view });
    tracing::info!(room = %r.name, product = %row.id, by = %ctx.claims.identity, "product pinned");
    Ok(())
}

/// `unpin_product`: take the pinned product down (nothing pinned: nothing happens).
pub async fn unpin(ctx: &Ctx<'_>) -> Result<(), AppError> {
    let live = staff(ctx, "unpin products")?;
    ctx.app.store.set_pinned(&live, None).await?;
    let mut r = lock(ctx.room);
    if let Some(p) = r.commerce.unpin() {
        r.broadcast_all(ServerMsg::ProductUnpinned { product: p.id });
    }
    Ok(())
}

/// `product_click`: a tap on the pinned product's checkout button.
pub fn click(ctx: &Ctx<'_>, product: &str) -> Result<(), AppError> {
    if lock(ctx.room).commerce.click(&ctx.claims.identity, product, Instant::now()) {
        Ok(())
    } else {
        Err(AppError::new(ErrorCode::NotFound, "that product is not pinned"))
    }
}

/// `get_supporters`.
pub fn supporters(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    staff(ctx, "see the supporters")?;
    let r = lock(ctx.room);
    Ok(ServerMsg::Supporters { supporters: r.commerce.supporters(), totals: r.commerce.totals() })
}

/// Store the product counters every room gathered since the last time (the reactions' tick).
pub async fn flush_counters(rooms: &Rooms, store: &Store) {
    for room in rooms.all() {
        let (live, deltas) = {
            let mut r = lock(&room);
            (r.chat.live_id.clone(), r.commerce.take_pending())
        };
        if deltas.is_empty() {
            continue;
        }
        if let Err(e) = store.add_product_stats(&live, &deltas).await {
            tracing::error!(%live, "storing product counters (kept for the next try): {e}");
            lock(&room).commerce.restore_pending(deltas);
        }
    }
}

/// A supporter as the panel lists it, from the store (after the live, too).
pub fn supporter_view(config: &CommerceConfig, p: &PaymentRow) -> SupporterView {
    SupporterView {
        payment: p.id.clone(),
        identity: p.identity.clone(),
        name: p.name.clone(),
        tier: p.tier,
        tier_name: config.tiers.get(usize::from(p.tier).wrapping_sub(1)).map(|t| t.name.clone()).unwrap_or_default(),
        amount_minor: p.amount_minor,
        currency: p.currency.clone(),
        at: p.received_at,
    }
}

/// What a webhook event did.
#[derive(Debug, PartialEq)]
pub enum EventOutcome {
    Granted {
        payment: String,
        live_id: String,
        badge: BadgeView,
    },
    Refunded {
        payment: String,
        live_id: String,
        identity: String,
        badge: Option<BadgeView>,
    },
    /// The same event id again: nothing changed.
    Duplicate {
        id: String,
    },
}

/// Apply a verified webhook event.
pub async fn on_event(app: &AppState, event: Event) -> Result<EventOutcome, AppError> {
    match event {
        Event::Payment { id, room, identity, name, tier, amount_minor, currency, live_id } => {
            let config = &app.config.commerce;
            let t = config.tiers.get(usize::from(tier).wrapping_sub(1)).ok_or_else(|| {
                AppError::new(ErrorCode::UnknownTier, format!("tier must be 1..={} (commerce.tiers)", config.tiers.len()))
            })?;
            if amount_minor.is_some_and(|a| a != t.price_minor)
                || currency.as_deref().is_some_and(|c| !c.eq_ignore_ascii_case(&config.currency))
            {
                return Err(AppError::new(
                    ErrorCode::UnknownTier,
                    format!("tier {tier} costs {} {} (minor units); the payment says otherwise", t.price_minor, config.currency),
                ));
            }
            let current = current_live(app, &room).await?;
            if live_id.as_deref().is_some_and(|l| l != current) {
                return Err(AppError::new(ErrorCode::RoomEnded, "that live is not on air in this room"));
            }
            let row = PaymentRow {
                id: id.clone(),
                live_id: current.clone(),
                room: room.clone(),
                name: name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| identity.clone()),
                identity,
                tier,
                amount_minor: t.price_minor,
                currency: config.currency.clone(),
                received_at: unix_ms(),
                refunded_at: None,
            };
            match app.store.record_payment(&row).await? {
                Recorded::Known(known) => {
                    if known.identity == row.identity && known.room == row.room && known.tier == row.tier {
                        Ok(EventOutcome::Duplicate { id })
                    } else {
                        Err(AppError::new(ErrorCode::Conflict, "this payment id was recorded for another identity, room or tier"))
                    }
                }
                Recorded::New => {
                    let badge = BadgeView { tier, name: t.name.clone() };
                    granted(app, row);
                    Ok(EventOutcome::Granted { payment: id, live_id: current, badge })
                }
            }
        }
        Event::Refund { id, payment } => match app.store.refund(&payment, &id).await? {
            Refunded::NoSuchPayment => Err(AppError::new(ErrorCode::NotFound, "no such payment")),
            Refunded::AlreadyRefunded(_) => {
                Err(AppError::new(ErrorCode::Conflict, "this payment was refunded before, under another refund id"))
            }
            Refunded::Known(_) => Ok(EventOutcome::Duplicate { id }),
            Refunded::Done(p) => {
                let badge = refunded(app, &p);
                Ok(EventOutcome::Refunded { payment: p.id, live_id: p.live_id, identity: p.identity, badge })
            }
        },
    }
}

/// The live on air in `room`: the running room's, else the store's open live.
async fn current_live(app: &AppState, room: &str) -> Result<String, AppError> {
    if let Some(r) = app.rooms.get(room) {
        let r = lock(&r);
        if r.state() == RoomState::Ended {
            return Err(AppError::new(ErrorCode::RoomEnded, "this room's live has ended"));
        }
        return Ok(r.chat.live_id.clone());
    }
    app.store.open_live_of(room).await?.ok_or_else(|| AppError::new(ErrorCode::NotFound, "no live in this room"))
}

/// A new payment reaches the running room (if it runs that live): the badge for everyone, the
/// supporter for the host and moderators. A room opened since loads it from the store instead.
fn granted(app: &AppState, p: PaymentRow) {
    let Some(room) = app.rooms.get(&p.room) else { return };
    let mut r = lock(&room);
    if r.chat.live_id != p.live_id {
        return;
    }
    let (identity, supporter) = (p.identity.clone(), r.commerce.supporter(&p));
    if r.commerce.grant(p) {
        let badge = r.commerce.badge(&identity);
        r.broadcast_all(ServerMsg::Badge { identity, badge });
        let totals = r.commerce.totals();
        r.send_to_staff(&ServerMsg::Supporter { supporter, totals });
    }
}

/// A refund reaches the running room: the identity's badge now.
fn refunded(app: &AppState, p: &PaymentRow) -> Option<BadgeView> {
    let room = app.rooms.get(&p.room)?;
    let mut r = lock(&room);
    if r.chat.live_id != p.live_id {
        return None;
    }
    let (identity, badge) = r.commerce.revoke(&p.id)?;
    r.broadcast_all(ServerMsg::Badge { identity: identity.clone(), badge: badge.clone() });
    let totals = r.commerce.totals();
    r.send_to_staff(&ServerMsg::SupporterRefunded { payment: p.id.clone(), identity, totals });
    badge
}

/// The catalog of `room` changed over the API: the staff re-fetch it; a pinned product that was
/// edited is shown anew, one that was deleted comes down.
pub async fn catalog_changed(app: &AppState, room: &str, product: &str, now: Option<ProductView>) {
    let Some(running) = app.rooms.get(room) else { return };
    let unpinned_live = {
        let mut r = lock(&running);
        r.send_to_staff(&ServerMsg::ProductsChanged);
        match (r.commerce.pinned().is_some_and(|p| p.id == product), now) {
            (false, _) => None,
            (true, Some(view)) => {
                r.commerce.pin(view.clone());
                r.broadcast_all(ServerMsg::ProductPinned { product: view });
                None
            }
            (true, None) => {
                r.commerce.unpin();
                r.broadcast_all(ServerMsg::ProductUnpinned { product: product.to_owned() });
                Some(r.chat.live_id.clone())
            }
        }
    };
    if let Some(live) = unpinned_live
        && let Err(e) = app.store.set_pinned(&live, None).await
    {
        tracing::error!(%live, "unpinning a deleted product in the store: {e}");
    }
}
