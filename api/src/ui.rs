//! The web page at `/ui/`: static files compiled into the binary (no CDN,
//! no build step), drawing a tenant's topology from the REST API.
//!
//! The files need no token; the page sends the token the user logs in with
//! as the bearer token of every API call, so it sees exactly what that
//! token sees. A strict Content-Security-Policy allows only these files:
//! no inline script or style, no other origin, no framing.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::server::AppState;

/// The policy every page file is served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The page's files: name under `/ui/`, media type, contents.
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/api.js"),
    ),
    (
        "model.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/model.js"),
    ),
    (
        "draw.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/draw.js"),
    ),
    ("icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];

fn file(name: &str) -> Response {
    let Some((_, media_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no such file in the web UI\n",
        )
            .into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The files change with the binary; revalidating is cheap.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    file("index.html")
}

async fn asset(Path(name): Path<String>) -> Response {
    file(&name)
}

/// The `/ui` routes (outside the OpenAPI document: they are not the API).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_the_page_loads_is_served() {
        let index = FILES[0].2;
        for (name, media_type, body) in FILES {
            assert!(!body.is_empty(), "{name} is empty");
            assert!(media_type.contains("charset=utf-8") || name.ends_with(".svg"));
            if *name != "index.html" && *name != "app.js" {
                let loaded = index.contains(&format!("\"{name}\""))
                    || FILES
                        .iter()
                        .any(|(_, _, js)| js.contains(&format!("\"./{name}\"")));
                assert!(loaded, "{name} is served but nothing loads it");
            }
        }
        assert!(index.contains("src=\"app.js\""));
        assert!(
            !index.contains("<script>") && !index.contains(" style="),
            "no inline script or style: the policy would block it"
        );
    }
}
