//! The operator's web UI: the static files of `web/` at the repository root,
//! compiled into the binary so the gateway stays one file and the build needs
//! no Node. `/` answers the page's shell, `/ui/{*path}` its modules and style.
//!
//! Every file is served with `Cache-Control: no-cache` and a strong `ETag` (a
//! hash of the bytes), so a browser revalidates with one small request and
//! gets `304` until a new binary ships other bytes; the file names carry no
//! hash that would let them be cached for longer. A client that accepts gzip
//! gets the file gzip-encoded (about a quarter of the bytes): each file is
//! compressed once, the first time it is asked for, and kept; the encoded
//! form has an ETag of its own (a cache must not answer a gzip request with
//! plain bytes or the other way round), and every answer says
//! `Vary: Accept-Encoding`. This module never reads the disk: a path outside
//! [`FILES`] is 404.

use std::io::Write as _;
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
    ("pages/device-form.js", JS, include_bytes!("../../../web/pages/device-form.js")),
    ("pages/browse.js", JS, include_bytes!("../../../web/pages/browse.js")),
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

/// A file's gzip-encoded bytes and their ETag.
type Gzipped = (Vec<u8>, HeaderValue);

/// The gzip form of each file of [`FILES`], made on first use; `None` where
/// gzip would not be smaller.
static GZIP: LazyLock<Vec<Option<Gzipped>>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(_, _, bytes)| {
            let gz = gzip(bytes);
            let etag = HeaderValue::from_str(&format!("\"{:016x}-gz\"", fnv1a(bytes))).expect("hex is a valid header");
            (gz.len() < bytes.len()).then_some((gz, etag))
        })
        .collect()
});

/// `bytes` gzip-encoded at the best compression: done once per file, so the time is spent once.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 3), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a non-zero weight.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let q = parts.find_map(|p| p.strip_prefix("q=")).map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        },
    )
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let (_, ctype, plain) = FILES[i];
    let gz = if accepts_gzip(headers) { GZIP[i].as_ref() } else { None };
    let (body, etag): (&'static [u8], HeaderValue) = match gz {
        Some((bytes, etag)) => (bytes.as_slice(), etag.clone()),
        None => (plain, ETAGS[i].clone()),
    };
    let cache = (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    // The page's scripts must not be framed by another site (clickjacking of a set-point form).
    let frames = (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let nosniff = (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/").as_bytes() == etag.as_bytes()));
    if matches {
        return (StatusCode::NOT_MODIFIED, [cache, vary, (header::ETAG, etag)]).into_response();
    }
    let ctype = (header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    let mut resp = ([ctype, cache, vary, (header::ETAG, etag), frames, nosniff], body).into_response();
    if gz.is_some() {
        resp.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
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

    async fn get(path: &str, headers: &[(header::HeaderName, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(k, HeaderValue::from_str(v).unwrap());
        }
        let i = FILES.iter().position(|(p, _, _)| *p == path).unwrap();
        let resp = serve(i, &map);
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.status, parts.headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn a_gzip_answer_decodes_to_the_files_bytes_and_revalidates_by_its_own_etag() {
        use std::io::Read as _;
        for (path, _, plain) in FILES {
            let (s, h, body) = get(path, &[(header::ACCEPT_ENCODING, "gzip, deflate, br")]).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(h[header::CONTENT_ENCODING], "gzip", "{path}");
            assert_eq!(h[header::VARY], "accept-encoding");
            assert!(body.len() < plain.len(), "{path}: {} bytes gzip for {} plain", body.len(), plain.len());
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice()).read_to_end(&mut out).unwrap();
            assert_eq!(&out, plain, "{path} decodes to what is embedded");
            let etag = h[header::ETAG].to_str().unwrap().to_owned();
            let (s, h, body) = get(path, &[(header::ACCEPT_ENCODING, "gzip"), (header::IF_NONE_MATCH, &etag)]).await;
            assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));
            assert_eq!(h[header::VARY], "accept-encoding");
            // The gzip ETag does not validate the plain bytes, nor the other way round.
            let (s, h, _) = get(path, &[(header::IF_NONE_MATCH, &etag)]).await;
            assert_eq!(s, StatusCode::OK);
            let plain_etag = h[header::ETAG].to_str().unwrap().to_owned();
            assert_ne!(plain_etag, etag);
            let (s, _, _) = get(path, &[(header::ACCEPT_ENCODING, "gzip"), (header::IF_NONE_MATCH, &plain_etag)]).await;
            assert_eq!(s, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn a_client_that_does_not_accept_gzip_gets_the_plain_bytes() {
        for ae in [None, Some("identity"), Some("br"), Some("gzip;q=0"), Some("deflate, gzip; q=0")] {
            let headers: Vec<_> = ae.map(|v| (header::ACCEPT_ENCODING, v)).into_iter().collect();
            let (s, h, body) = get("app.js", &headers).await;
            assert_eq!(s, StatusCode::OK);
            assert!(h.get(header::CONTENT_ENCODING).is_none(), "{ae:?}");
            assert_eq!(h[header::VARY], "accept-encoding");
            assert_eq!(body, include_bytes!("../../../web/app.js"), "{ae:?}");
        }
        let (_, h, _) = get("app.js", &[(header::ACCEPT_ENCODING, "*")]).await;
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    }

    #[test]
    fn etags_differ_when_the_bytes_differ() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(ETAGS.len(), FILES.len());
    }
}
