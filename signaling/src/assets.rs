//! The browser client, embedded so the one binary serves everything (no npm, no build step at
//! run time). Every file of `web-client/` that the page loads is listed once in [`ASSETS`]; the
//! test below fails when a file is added to the folder and not to the table.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One file the binary serves: its URL path (without the leading `/`), media type and body.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

macro_rules! asset {
    ($path:literal, $ty:expr) => {
        Asset { path: $path, content_type: $ty, body: include_str!(concat!("../../web-client/", $path)) }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the page. `index.html` is also served at `/`.
pub static ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("upcoming.html", HTML),
    asset!("embed.html", HTML),
    asset!("js/embed.js", JS),
    asset!("js/upcoming.js", JS),
    asset!("style.css", CSS),
    asset!("js/main.js", JS),
    asset!("js/state.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/signal.js", JS),
    asset!("js/session.js", JS),
    asset!("js/publish.js", JS),
    asset!("js/subscribe.js", JS),
    asset!("js/path.js", JS),
    asset!("js/stage.js", JS),
    asset!("js/studio.js", JS),
    asset!("js/debug.js", JS),
    asset!("js/chat.js", JS),
    asset!("js/reactions.js", JS),
    asset!("js/qoe.js", JS),
    asset!("js/moderation.js", JS),
    asset!("js/commerce.js", JS),
    asset!("js/schedule.js", JS),
    asset!("js/api.js", JS),
    asset!("js/archive.js", JS),
];

const FAVICON: &str = "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'><circle cx='8' cy='8' r='6' fill='#ff3b5c'/></svg>";

fn respond(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The asset at `path`, if the table has it.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}

async fn index() -> Response {
    match find("index.html") {
        Some(a) => respond(a.content_type, a.body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A page of the table by name (routes that serve one page at many paths).
pub fn page(name: &str) -> Response {
    match find(name) {
        Some(a) => respond(a.content_type, a.body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(Path(path): Path<String>) -> Response {
    match find(&path) {
        Some(a) => respond(a.content_type, a.body),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn favicon() -> Response {
    respond("image/svg+xml", FAVICON)
}

/// Routes for the page: `/`, `/favicon.ico` and `/{file}` for every file in the table
/// (`/{dir}/{file}` too, for modules in a subfolder).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/favicon.ico", get(favicon))
        .route("/{file}", get(file))
        .route("/{dir}/{file}", get(|Path((dir, f)): Path<(String, String)>| async move { file(Path(format!("{dir}/{f}"))).await }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every servable file under web-client/ (tests/ and node tooling excluded).
    fn files_on_disk() -> BTreeSet<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-client");
        let mut out = BTreeSet::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("web-client/ is readable") {
                let path = entry.expect("a directory entry").path();
                let rel = path.strip_prefix(&root).expect("under root").to_string_lossy().replace('\\', "/");
                if path.is_dir() {
                    // admin/: the dashboard, served by the admin listener (observe::admin), not here.
                    if rel != "tests" && rel != "node_modules" && rel != "admin" {
                        dirs.push(path);
                    }
                } else if [".js", ".html", ".css"].iter().any(|ext| rel.ends_with(ext)) {
                    out.insert(rel);
                }
            }
        }
        out
    }

    #[test]
    fn the_table_lists_every_file_of_the_page() {
        let table: BTreeSet<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        let disk = files_on_disk();
        assert!(disk.contains("index.html"), "found {disk:?}");
        let missing: Vec<_> = disk.difference(&table).collect();
        assert!(missing.is_empty(), "web-client files the binary does not serve: {missing:?}");
        let stale: Vec<_> = table.difference(&disk).collect();
        assert!(stale.is_empty(), "table entries with no file: {stale:?}");
    }

    #[test]
    fn media_types_follow_the_extension() {
        for a in ASSETS {
            let want = match a.path.rsplit('.').next() {
                Some("js") => JS,
                Some("css") => CSS,
                Some("html") => HTML,
                other => panic!("unexpected extension {other:?} for {}", a.path),
            };
            assert_eq!(a.content_type, want, "{}", a.path);
        }
    }
}
