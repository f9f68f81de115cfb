//! What a product may say: a title, a price, and URLs a page can show and open without harm.

use crate::error::{AppError, ErrorCode};
use crate::live::chat::text::clean_comment;
use crate::protocol::ProductView;
use crate::store::ProductRow;

/// Longest product title, in characters.
pub const MAX_TITLE_CHARS: usize = 80;
/// Longest URL, in bytes (after parsing).
pub const MAX_URL_BYTES: usize = 2048;
/// Highest price, in minor units (100 million of the currency's major unit).
pub const MAX_PRICE_MINOR: i64 = 10_000_000_000;

/// An ISO 4217-shaped code: three ASCII capitals.
pub fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

pub fn title(raw: &str) -> Result<String, AppError> {
    clean_comment(raw.trim(), MAX_TITLE_CHARS).map_err(|e| AppError::new(ErrorCode::BadMessage, format!("title: {}", e.message)))
}

pub fn price(minor: i64) -> Result<i64, AppError> {
    if (0..=MAX_PRICE_MINOR).contains(&minor) {
        Ok(minor)
    } else {
        Err(AppError::new(ErrorCode::BadMessage, format!("price_minor must be 0..={MAX_PRICE_MINOR} (the currency's minor unit)")))
    }
}

pub fn currency(raw: &str) -> Result<String, AppError> {
    let c = raw.trim().to_ascii_uppercase();
    if is_currency(&c) { Ok(c) } else { Err(AppError::new(ErrorCode::BadMessage, "currency must be an ISO 4217 code such as USD")) }
}

/// An absolute http(s) URL with a host and no credentials, as the WHATWG parser writes it.
/// Everything a browser would run or read locally (`javascript:`, `data:`, `blob:`, `file:`,
/// `vbscript:`) is refused, whatever its case or the spaces around it.
pub fn web_url(field: &str, raw: &str) -> Result<String, AppError> {
    let bad = |why: &str| AppError::new(ErrorCode::BadUrl, format!("{field}: {why}"));
    if raw.len() > MAX_URL_BYTES {
        return Err(bad(&format!("longer than {MAX_URL_BYTES} bytes")));
    }
    let url = url::Url::parse(raw.trim()).map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https URLs are allowed"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("the URL may not carry a user name or password"));
    }
    let out = url.to_string();
    if out.len() > MAX_URL_BYTES {
        return Err(bad(&format!("longer than {MAX_URL_BYTES} bytes")));
    }
    Ok(out)
}

/// An image URL: empty (none), an http(s) URL, or an image this server keeps for `product`.
pub fn image_url(product: &str, raw: &str) -> Result<String, AppError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(String::new());
    }
    let own = format!("/media/products/{product}");
    if raw == own
        || raw
            .strip_prefix(&own)
            .and_then(|rest| rest.strip_prefix("?v="))
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(raw.to_owned());
    }
    web_url("image_url", raw)
}

pub fn view(p: &ProductRow) -> ProductView {
    ProductView {
        id: p.id.clone(),
        title: p.title.clone(),
        price_minor: p.price_minor,
        currency: p.currency.clone(),
        image_url: p.image_url.clone(),
        checkout_url: p.checkout_url.clone(),
    }
}

/// What an uploaded image is, by its first bytes (the declared type must agree).
pub fn sniff_image(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_urls_pass() {
        assert_eq!(web_url("checkout_url", " https://shop.example/p/1?x=1 ").ok().as_deref(), Some("https://shop.example/p/1?x=1"));
        assert_eq!(web_url("u", "http://127.0.0.1:8080/a b").ok().as_deref(), Some("http://127.0.0.1:8080/a%20b"));
        for bad in [
            "javascript:alert(1)",
            " JaVaScRiPt:alert(1)",
            "\tjavascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox",
            "blob:https://x/1",
            "file:///etc/passwd",
            "//evil.example/x",
            "/relative",
            "https://user:pw@shop.example/",
            "https://",
            "ftp://shop.example/",
            "",
        ] {
            let e = web_url("checkout_url", bad).err();
            assert_eq!(e.map(|e| e.code), Some(ErrorCode::BadUrl), "{bad:?}");
        }
        assert!(web_url("u", &format!("https://a.example/{}", "x".repeat(MAX_URL_BYTES))).is_err());
    }

    #[test]
    fn an_image_is_a_web_url_or_ours() {
        assert_eq!(image_url("p1", "").ok().as_deref(), Some(""));
        assert_eq!(image_url("p1", "/media/products/p1?v=12").ok().as_deref(), Some("/media/products/p1?v=12"));
        assert!(image_url("p1", "/media/products/p2?v=12").is_err());
        assert!(image_url("p1", "/media/products/p1?v=1;x").is_err());
        assert!(image_url("p1", "data:image/png;base64,AAAA").is_err());
    }

    #[test]
    fn titles_prices_currencies() {
        assert_eq!(title("  Red sneakers ").ok().as_deref(), Some("Red sneakers"));
        assert!(title("").is_err());
        assert!(title(&"x".repeat(MAX_TITLE_CHARS + 1)).is_err());
        assert!(title("a\u{202E}b").is_err());
        assert!(price(-1).is_err() && price(MAX_PRICE_MINOR + 1).is_err() && price(0).is_ok());
        assert_eq!(currency("eur").ok().as_deref(), Some("EUR"));
        assert!(currency("EURO").is_err() && currency("E1R").is_err());
    }

    #[test]
    fn images_are_told_by_their_bytes() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_image(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_image(b"GIF89a"), Some("image/gif"));
        assert_eq!(sniff_image(b"<svg onload=alert(1)>"), None);
        assert_eq!(sniff_image(b""), None);
    }
}
