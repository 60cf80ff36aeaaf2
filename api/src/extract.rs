//! Request extractors that fail with problem+json instead of plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::problem::Problem;

/// The most a request body may hold.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON object body.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<JsonObject, Problem> {
        read_object(req, state, false).await.map(JsonObject)
    }
}

/// A JSON object body that may also be left out (read as `{}`).
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<OptionalJsonObject, Problem> {
        read_object(req, state, true).await.map(OptionalJsonObject)
    }
}

async fn read_object<S: Send + Sync>(
    req: Request,
    state: &S,
    allow_empty: bool,
) -> Result<Map<String, Value>, Problem> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "application/json" || v.ends_with("+json"));
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                "payload-too-large",
                "Request body too large",
                format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
        } else {
            Problem::bad_request(format!("cannot read the request body: {rejection}"))
        }
    })?;
    if allow_empty && bytes.is_empty() {
        return Ok(Map::new());
    }
    if !json {
        return Err(Problem::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as 'Content-Type: application/json'",
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::bad_request(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(Problem::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// Deserializes `value` as `T`, naming the offending field on failure.
pub fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let problem = Problem::bad_request(format!("field '{path}': {}", e.inner()));
        if path == "." {
            // Serde reports missing and unknown fields at the top level.
            let message = e.inner().to_string();
            let field = message.split('`').nth(1).unwrap_or("").to_string();
            Problem::bad_request(message).with_field(field)
        } else {
            problem.with_field(path)
        }
    })
}

/// The revision in an `If-Match` header, if one was sent.
pub struct IfMatch(pub Option<nsdb::Revision>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<IfMatch, Problem> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or("").trim();
        let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
        text.parse::<nsdb::Revision>()
            .map(|r| IfMatch(Some(r)))
            .map_err(|_| {
                Problem::bad_request(format!(
                    "If-Match must be a revision like \"42\", got '{text}'"
                ))
                .with_field("If-Match")
            })
    }
}

/// axum's `Path`, failing with a problem instead of plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Path<T>, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection| {
                Problem::bad_request(format!("bad URL path: {}", rejection.body_text()))
                    .with_field("path")
            })
    }
}

/// axum's `Query`, failing with a problem instead of plain text.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query<T>, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| {
                Problem::bad_request(format!("bad query string: {}", rejection.body_text()))
                    .with_field("query")
            })
    }
}
