//! The operators' console: one page, its script and its style, built into
//! the binary (nothing to install or fetch at run time, no CDN). The page
//! reads the same API as drctl — the status stream, the events, a VM's
//! detail — and sends commands with the token the operator types in; it
//! holds no state of its own that the API does not.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../console/index.html");

/// The files under `/console/`: name, content type, body.
const FILES: [(&str, &str, &str); 2] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
];

/// Only this origin's script, style and API: an injected name can never
/// load or run anything.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Revalidated each time: an upgraded drd serves its own files.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `/`: the console's page.
pub async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `/console/{file}`: its script and style.
pub async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => file(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such console file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_that_are_served() {
        for reference in ["/console/app.js", "/console/style.css"] {
            assert!(INDEX.contains(reference), "{reference}");
            let name = reference.trim_start_matches("/console/");
            assert!(FILES.iter().any(|(n, _, _)| *n == name), "{name}");
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}
