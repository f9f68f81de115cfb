//! Supporters and products in the store (issue #15): payments the provider told us about, each
//! room's product catalog with uploaded images, per-live product counters, and the live's pin.

use super::{Store, db, unix_ms};
use crate::error::{AppError, ErrorCode};
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;

/// One payment that granted a badge (refunded ones are not loaded into a live).
#[derive(Clone, Debug, PartialEq)]
pub struct PaymentRow {
    /// The provider's payment id.
    pub id: String,
    pub live_id: String,
    pub room: String,
    pub identity: String,
    pub name: String,
    pub tier: u8,
    pub amount_minor: i64,
    pub currency: String,
    pub received_at: i64,
    pub refunded_at: Option<i64>,
}

/// What recording a payment did.
#[derive(Debug, PartialEq)]
pub enum Recorded {
    New,
    /// The id was known: the payment as first recorded.
    Known(PaymentRow),
}

/// What a refund did.
#[derive(Debug, PartialEq)]
pub enum Refunded {
    /// The payment is refunded now.
    Done(PaymentRow),
    /// This refund id was applied before (to this payment).
    Known(PaymentRow),
    NoSuchPayment,
    /// The payment was refunded before by another refund id.
    AlreadyRefunded(PaymentRow),
}

/// A product of a room's catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductRow {
    pub id: String,
    pub room: String,
    pub title: String,
    pub price_minor: i64,
    pub currency: String,
    pub image_url: String,
    pub checkout_url: String,
}

/// A live as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveRow {
    pub id: String,
    pub room: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
}

const PAYMENT_COLUMNS: &str = "id, live_id, room, identity, name, tier, amount_minor, currency, received_at, refunded_at";
const PRODUCT_COLUMNS: &str = "id, room, title, price_minor, currency, image_url, checkout_url";

fn payment(r: &AnyRow) -> PaymentRow {
    PaymentRow {
        id: r.get("id"),
        live_id: r.get("live_id"),
        room: r.get("room"),
        identity: r.get("identity"),
        name: r.get("name"),
        tier: r.get::<i64, _>("tier").clamp(0, 255) as u8,
        amount_minor: r.get("amount_minor"),
        currency: r.get("currency"),
        received_at: r.get("received_at"),
        refunded_at: r.get("refunded_at"),
    }
}

fn product(r: &AnyRow) -> ProductRow {
    ProductRow {
        id: r.get("id"),
        room: r.get("room"),
        title: r.get("title"),
        price_minor: r.get("price_minor"),
        currency: r.get("currency"),
        image_url: r.get("image_url"),
        checkout_url: r.get("checkout_url"),
    }
}

impl Store {
    /// The live of `room` that has not ended.
    pub async fn open_live_of(&self, room: &str) -> Result<Option<String>, AppError> {
        let row = sqlx::query("SELECT id FROM lives WHERE room = $1 AND ended_at IS NULL ORDER BY created_at DESC LIMIT 1")
            .bind(room)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the live"))?;
        Ok(row.map(|r| r.get("id")))
    }

    pub async fn live(&self, id: &str) -> Result<Option<LiveRow>, AppError> {
        let row = sqlx::query("SELECT id, room, created_at, ended_at FROM lives WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the live"))?;
        Ok(row.map(|r| LiveRow { id: r.get("id"), room: r.get("room"), created_at: r.get("created_at"), ended_at: r.get("ended_at") }))
    }

    /// Record a payment once: the same provider id again changes nothing.
    pub async fn record_payment(&self, p: &PaymentRow) -> Result<Recorded, AppError> {
        let e = "could not record the payment";
        let done = sqlx::query(
            "INSERT INTO payments (id, live_id, room, identity, name, tier, amount_minor, currency, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&p.id)
        .bind(&p.live_id)
        .bind(&p.room)
        .bind(&p.identity)
        .bind(&p.name)
        .bind(i64::from(p.tier))
        .bind(p.amount_minor)
        .bind(&p.currency)
        .bind(p.received_at)
        .execute(&self.pool)
        .await
        .map_err(db(e))?;
        if done.rows_affected() == 1 {
            return Ok(Recorded::New);
        }
        let known = self.payment(&p.id).await?.ok_or_else(|| AppError::internal(e, format!("payment {} neither new nor known", p.id)))?;
        Ok(Recorded::Known(known))
    }

    pub async fn payment(&self, id: &str) -> Result<Option<PaymentRow>, AppError> {
        let row = sqlx::query(&format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the payment"))?;
        Ok(row.as_ref().map(payment))
    }

    /// Refund `payment` under the provider's `refund_id`, once.
    pub async fn refund(&self, payment_id: &str, refund_id: &str) -> Result<Refunded, AppError> {
        let e = "could not record the refund";
        let done = sqlx::query("UPDATE payments SET refund_id = $1, refunded_at = $2 WHERE id = $3 AND refunded_at IS NULL")
            .bind(refund_id)
            .bind(unix_ms())
            .bind(payment_id)
            .execute(&self.pool)
            .await;
        let done = match done {
            Ok(d) => d,
            // The refund id is unique: it was used for another payment.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                return Err(AppError::new(ErrorCode::Conflict, "this refund id was used for another payment"));
            }
            Err(err) => return Err(db(e)(err)),
        };
        let Some(row) = self.payment(payment_id).await? else { return Ok(Refunded::NoSuchPayment) };
        if done.rows_affected() == 1 {
            return Ok(Refunded::Done(row));
        }
        let again = sqlx::query("SELECT refund_id FROM payments WHERE id = $1")
            .bind(payment_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db(e))?
            .get::<Option<String>, _>("refund_id");
        Ok(if again.as_deref() == Some(refund_id) { Refunded::Known(row) } else { Refunded::AlreadyRefunded(row) })
    }

    /// The payments of a live, refunded ones included, in the order they came.
    pub async fn payments_of(&self, live: &str) -> Result<Vec<PaymentRow>, AppError> {
        let rows = sqlx::query(&format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE live_id = $1 ORDER BY received_at, id"))
            .bind(live)
            .fetch_all(&self.pool)
            .await
            .map_err(db("could not read the supporters"))?;
        Ok(rows.iter().map(payment).collect())
    }

    pub async fn products(&self, room: &str) -> Result<Vec<ProductRow>, AppError> {
        let rows =
            sqlx::query(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE room = $1 AND deleted_at IS NULL ORDER BY created_at, id"))
                .bind(room)
                .fetch_all(&self.pool)
                .await
                .map_err(db("could not read the products"))?;
        Ok(rows.iter().map(product).collect())
    }

    pub async fn product(&self, room: &str, id: &str) -> Result<Option<ProductRow>, AppError> {
        let row = sqlx::query(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1 AND room = $2 AND deleted_at IS NULL"))
            .bind(id)
            .bind(room)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the product"))?;
        Ok(row.as_ref().map(product))
    }

    /// Add a product, unless the room's catalog holds `max` already.
    pub async fn add_product(&self, p: &ProductRow, max: usize) -> Result<(), AppError> {
        let e = "could not store the product";
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM products WHERE room = $1 AND deleted_at IS NULL")
            .bind(&p.room)
            .fetch_one(&self.pool)
            .await
            .map_err(db(e))?
            .get("n");
        if n as usize >= max {
            return Err(AppError::new(ErrorCode::Conflict, format!("this room's catalog holds {max} products; delete one first")));
        }
        let now = unix_ms();
        sqlx::query(&format!(
            "INSERT INTO products ({PRODUCT_COLUMNS}, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)"
        ))
        .bind(&p.id)
        .bind(&p.room)
        .bind(&p.title)
        .bind(p.price_minor)
        .bind(&p.currency)
        .bind(&p.image_url)
        .bind(&p.checkout_url)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db(e))?;
        Ok(())
    }

    pub async fn update_product(&self, p: &ProductRow) -> Result<bool, AppError> {
        let done = sqlx::query(
            "UPDATE products SET title = $1, price_minor = $2, currency = $3, image_url = $4, checkout_url = $5, updated_at = $6 \
             WHERE id = $7 AND room = $8 AND deleted_at IS NULL",
        )
        .bind(&p.title)
        .bind(p.price_minor)
        .bind(&p.currency)
        .bind(&p.image_url)
        .bind(&p.checkout_url)
        .bind(unix_ms())
        .bind(&p.id)
        .bind(&p.room)
        .execute(&self.pool)
        .await
        .map_err(db("could not store the product"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Delete a product (its row stays for the lives' counters; its image goes).
    pub async fn delete_product(&self, room: &str, id: &str) -> Result<bool, AppError> {
        let e = "could not delete the product";
        let done = sqlx::query("UPDATE products SET deleted_at = $1 WHERE id = $2 AND room = $3 AND deleted_at IS NULL")
            .bind(unix_ms())
            .bind(id)
            .bind(room)
            .execute(&self.pool)
            .await
            .map_err(db(e))?;
        sqlx::query("DELETE FROM product_images WHERE product_id = $1").bind(id).execute(&self.pool).await.map_err(db(e))?;
        Ok(done.rows_affected() == 1)
    }

    /// Keep an uploaded image; returns its new version (for the image URL).
    pub async fn set_product_image(&self, id: &str, content_type: &str, bytes: &[u8]) -> Result<i64, AppError> {
        let version = self.next_id();
        sqlx::query(
            "INSERT INTO product_images (product_id, content_type, bytes, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (product_id) DO UPDATE SET content_type = $2, bytes = $3, version = $4",
        )
        .bind(id)
        .bind(content_type)
        .bind(bytes)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(db("could not store the image"))?;
        Ok(version)
    }

    /// An uploaded image: its content type and bytes.
    pub async fn product_image(&self, id: &str) -> Result<Option<(String, Vec<u8>)>, AppError> {
        let row = sqlx::query("SELECT content_type, bytes FROM product_images WHERE product_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the image"))?;
        Ok(row.map(|r| (r.get("content_type"), r.get("bytes"))))
    }

    /// Add views and clicks to a live's product counters.
    pub async fn add_product_stats(&self, live: &str, deltas: &[(String, u64, u64)]) -> Result<(), AppError> {
        for (product, views, clicks) in deltas {
            sqlx::query(
                "INSERT INTO product_stats (live_id, product_id, views, clicks) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (live_id, product_id) DO UPDATE SET views = product_stats.views + $3, clicks = product_stats.clicks + $4",
            )
            .bind(live)
            .bind(product)
            .bind(*views as i64)
            .bind(*clicks as i64)
            .execute(&self.pool)
            .await
            .map_err(db("could not count the product's views"))?;
        }
        Ok(())
    }

    /// A live's counters per product: (views, clicks).
    pub async fn product_stats(&self, live: &str) -> Result<HashMap<String, (u64, u64)>, AppError> {
        let rows = sqlx::query("SELECT product_id, views, clicks FROM product_stats WHERE live_id = $1")
            .bind(live)
            .fetch_all(&self.pool)
            .await
            .map_err(db("could not read the product counters"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get("product_id"), (r.get::<i64, _>("views").max(0) as u64, r.get::<i64, _>("clicks").max(0) as u64)))
            .collect())
    }

    /// The product pinned in a live (`None`: none).
    pub async fn set_pinned(&self, live: &str, product: Option<&str>) -> Result<(), AppError> {
        sqlx::query("UPDATE lives SET pinned_product = $1 WHERE id = $2")
            .bind(product)
            .bind(live)
            .execute(&self.pool)
            .await
            .map_err(db("could not store the pin"))?;
        Ok(())
    }

    /// The product pinned in a live, when it still exists.
    pub async fn pinned(&self, live: &str, room: &str) -> Result<Option<ProductRow>, AppError> {
        let id: Option<String> = sqlx::query("SELECT pinned_product FROM lives WHERE id = $1")
            .bind(live)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("could not read the pin"))?
            .and_then(|r| r.get("pinned_product"));
        match id {
            Some(id) => self.product(room, &id).await,
            None => Ok(None),
        }
    }
}
