//! The host's stream-key messages: `create_stream_key`, `list_stream_keys`, `revoke_stream_key`
//! (docs/protocol.md §8). Keys are kept by the [`Store`](crate::store::Store); revoking one also
//! cuts the feed streaming with it.

use crate::auth::Role;
use crate::error::{AppError, ErrorCode};
use crate::live::ctx::Ctx;
use crate::protocol::ServerMsg;
use crate::store::KeySeat;

/// Longest label (bytes).
const MAX_LABEL_BYTES: usize = 64;

fn require_host(ctx: &Ctx<'_>) -> Result<(), AppError> {
    if ctx.claims.role != Role::Host {
        return Err(AppError::new(ErrorCode::NotAllowed, "only the host manages stream keys"));
    }
    Ok(())
}

/// A label is at most 64 printable bytes (empty: the store's default, `Studio`).
fn check_label(label: &str) -> Result<(), AppError> {
    if label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
        return Err(AppError::new(ErrorCode::BadMessage, "label: at most 64 printable bytes"));
    }
    Ok(())
}

/// `create_stream_key`: mint a key for the host's room; the reply is the only time it is shown.
pub async fn create(ctx: &Ctx<'_>, label: Option<String>, seat: KeySeat) -> Result<ServerMsg, AppError> {
    require_host(ctx)?;
    let label = label.unwrap_or_default();
    check_label(&label)?;
    let app = ctx.app;
    let minted = app
        .store
        .mint_stream_key(&ctx.claims.room, &label, seat)
        .await
        .map_err(|e| AppError { message: "could not store the stream key".into(), ..e })?;
    tracing::info!(room = %ctx.claims.room, id = %minted.view.id, "stream key minted");
    Ok(ServerMsg::StreamKey {
        id: minted.view.id,
        key: minted.key,
        server_url: app.studio.server_url(&app.config.rtmp),
        label: minted.view.label,
        seat: minted.view.seat,
    })
}

/// `list_stream_keys`: the room's keys, without secrets.
pub async fn list(ctx: &Ctx<'_>) -> Result<ServerMsg, AppError> {
    require_host(ctx)?;
    Ok(ServerMsg::StreamKeys { keys: ctx.app.store.stream_keys(Some(&ctx.claims.room)).await? })
}

/// `revoke_stream_key`: revoke a key of this room and end the feed streaming with it.
pub async fn revoke(ctx: &Ctx<'_>, id: String) -> Result<ServerMsg, AppError> {
    require_host(ctx)?;
    let found = ctx
        .app
        .store
        .revoke_stream_key(Some(&ctx.claims.room), &id)
        .await
        .map_err(|e| AppError { message: "could not store the revocation".into(), ..e })?;
    if !found {
        return Err(AppError::new(ErrorCode::NotFound, "no such stream key in this room"));
    }
    tracing::info!(room = %ctx.claims.room, %id, "stream key revoked");
    crate::live::studio::end_revoked(ctx.app, &id);
    Ok(ServerMsg::StreamKeyRevoked { id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_label("").is_ok());
        assert!(check_label("Main camera").is_ok());
        assert!(check_label(&"x".repeat(64)).is_ok());
        assert_eq!(check_label(&"x".repeat(65)).unwrap_err().code, ErrorCode::BadMessage);
        assert_eq!(check_label("a\nb").unwrap_err().code, ErrorCode::BadMessage);
    }
}
