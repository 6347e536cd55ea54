//! The operator's web UI: the static files of `web/` at the repository root,
//! compiled into the binary so the gateway stays one file and the build needs
//! no Node. `/` answers the page's shell, `/ui/{*path}` its modules and style.
//!
//! Every file is served with `Cache-Control: no-cache` and a strong `ETag` (a
//! hash of the bytes), so a browser revalidates with one small request and
//! gets `304` until a new binary ships other bytes; the file names carry no
//! hash that would let them be cached for longer. Files are served as they
//! are (no compression crate is in the tree; the whole UI is a few tens of
//! KiB). This module never reads the disk: a path outside [`FILES`] is 404.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::ApiError;

/// Every file of the UI, as (path under `/ui/`, content type, bytes).
pub const FILES: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../../web/index.html")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../../web/app.css")),
    ("app.js", JS, include_bytes!("../../../web/app.js")),
    ("core.js", JS, include_bytes!("../../../web/core.js")),
    ("pages/overview.js", JS, include_bytes!("../../../web/pages/overview.js")),
    ("pages/devices.js", JS, include_bytes!("../../../web/pages/devices.js")),
    ("pages/tags.js", JS, include_bytes!("../../../web/pages/tags.js")),
    ("pages/alarms.js", JS, include_bytes!("../../../web/pages/alarms.js")),
    ("pages/audit.js", JS, include_bytes!("../../../web/pages/audit.js")),
    ("pages/system.js", JS, include_bytes!("../../../web/pages/system.js")),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The ETag of each file of [`FILES`], in the same order; computed once.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(_, _, bytes)| {
            HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(bytes))).expect("hex is a valid header")
        })
        .collect()
});

/// FNV-1a, 64 bits: enough to tell two builds' files apart, and no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let (_, ctype, bytes) = FILES[i];
    let etag = ETAGS[i].clone();
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page's scripts must not be framed by another site (clickjacking of a set-point form).
    let frames = (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let nosniff = (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, [cache, (header::ETAG, etag)]).into_response();
    }
    let ctype = (header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    ([ctype, cache, (header::ETAG, etag), frames, nosniff], bytes).into_response()
}

/// `GET /`: the shell of the single-page app.
pub async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /ui/{*path}`: one of [`FILES`], else 404.
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match FILES.iter().position(|(p, _, _)| *p == path) {
        Some(i) => serve(i, &headers),
        None => ApiError::not_found("file", &path).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_pages_import_is_embedded() {
        // A module the shell or a page imports but FILES lacks would be a 404 only a
        // browser notices; read the imports out of the embedded sources instead.
        for (name, _, bytes) in FILES {
            let text = std::str::from_utf8(bytes).unwrap();
            for spec in text.split(['\'', '"']).filter(|s| s.ends_with(".js") || s.ends_with(".css")) {
                let path = spec.trim_start_matches("/ui/").trim_start_matches("./").trim_start_matches("../");
                let path = if name.starts_with("pages/") && spec.starts_with("./") {
                    format!("pages/{path}")
                } else {
                    path.to_owned()
                };
                assert!(FILES.iter().any(|(p, _, _)| *p == path), "{name} refers to {spec}, which is not embedded");
            }
        }
    }

    #[test]
    fn etags_differ_when_the_bytes_differ() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(ETAGS.len(), FILES.len());
    }
}
