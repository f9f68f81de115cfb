//! Server API bodies (signaling/src/api): a JSON body read within its limit (`api::json`) into
//! a product (`ProductInput`, then `api::products::apply`: title, price, currency, checkout and
//! image URLs through live/commerce/catalog.rs), and the uploaded image sniffer
//! (`catalog::sniff_image`).
//! Invariants: never panics; a body over the limit is refused; a product that passes has a
//! title of 1-80 clean characters, a price of 0..=10^10 minor units, a three-capital currency,
//! an http(s) checkout URL with a host, no credentials and at most 2048 bytes, an image URL
//! that is empty, ours, or such a URL; each URL is a fixed point (checking it again keeps it).
#![no_main]

use axum::body::Body;
use futures_util::FutureExt;
use libfuzzer_sys::fuzz_target;
use signaling::api::products::{ProductInput, apply};
use signaling::api::{MAX_JSON_BYTES, json};
use signaling::error::ErrorCode;
use signaling::live::commerce::catalog;
use signaling::store::ProductRow;

fn row() -> ProductRow {
    ProductRow {
        id: "p1f".into(),
        room: "r".into(),
        title: "t".into(),
        price_minor: 0,
        currency: "USD".into(),
        image_url: String::new(),
        checkout_url: "https://shop.example/".into(),
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = catalog::sniff_image(data);
    // The body as the handler reads it (a full body: the future is ready at once).
    let parsed = json::<ProductInput>(Body::from(data.to_vec())).now_or_never().expect("a full body is read at once");
    let input = match parsed {
        Ok(i) => i,
        Err(e) => {
            assert!(matches!(e.code, ErrorCode::BadMessage | ErrorCode::MessageTooLarge));
            assert!(e.code != ErrorCode::MessageTooLarge || data.len() > MAX_JSON_BYTES);
            return;
        }
    };
    let mut p = row();
    if apply(&mut p, input).is_err() {
        return;
    }
    let n = p.title.chars().count();
    assert!((1..=catalog::MAX_TITLE_CHARS).contains(&n));
    assert!((0..=catalog::MAX_PRICE_MINOR).contains(&p.price_minor));
    assert!(catalog::is_currency(&p.currency));
    for (field, url) in [("checkout_url", &p.checkout_url), ("image_url", &p.image_url)] {
        if url.is_empty() || url.starts_with("/media/products/p1f") {
            continue;
        }
        assert!(url.starts_with("http://") || url.starts_with("https://"), "{url:?}");
        assert!(url.len() <= catalog::MAX_URL_BYTES);
        assert_eq!(catalog::web_url(field, url).ok().as_deref(), Some(url.as_str()), "not a fixed point");
    }
    assert_eq!(catalog::title(&p.title).ok().as_deref(), Some(p.title.as_str()), "a title is a fixed point");
});
