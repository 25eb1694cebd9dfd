//! What every console answer carries (the CSP and its companions) and the assets in the
//! binary, shared by the operator console and the consumer usage page.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Every answer: the CSP, no sniffing, no referrer, not cached; and its server time.
pub async fn secure_headers(req: Request, next: Next) -> Response {
    let took = crate::clock::Stopwatch::start();
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    // The server's time for this answer (browsers' developer tools show it; the console's
    // benchmark reads it).
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={:.3}", took.seconds() * 1e3)) {
        h.insert("server-timing", v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// An asset of the binary, cached by the browser for an hour.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

const JS: &str = "text/javascript; charset=utf-8";

pub async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("console.css"))
}

/// The refresh of Live and the overview.
pub async fn live_js() -> Response {
    asset(JS, include_str!("live.js"))
}

/// The new key's Copy button.
pub async fn copy_js() -> Response {
    asset(JS, include_str!("copy.js"))
}

pub async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("favicon.svg"))
}
