//! The route table: the one way routes are registered, so the OpenAPI
//! document is generated from exactly the routes the server serves.

mod document;
pub mod ip_schemas;

use axum::http::Method;
use axum::routing::MethodRouter;
use schemars::gen::SchemaGenerator;
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde_json::Value;

use crate::server::AppState;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a response carries.
#[derive(Clone, Copy)]
enum Body {
    /// Nothing.
    Empty,
    /// A JSON document of a type.
    Json(SchemaFn),
    /// Text of a media type.
    Text(&'static str),
}

/// The errors every route can answer: a malformed request, no or a bad
/// token, no right, no such object, a conflict, a stale `If-Match`, a
/// refused reference or rule, a bug, the NSDB unreachable or contended.
const ERRORS: &[u16] = &[400, 401, 403, 404, 409, 412, 422, 500, 503];

/// The errors of a route with a request body, on top of [`ERRORS`]: too
/// large, not JSON.
const BODY_ERRORS: &[u16] = &[413, 415];

/// The errors a public route (no token, no request body) can answer.
const PUBLIC_ERRORS: &[u16] = &[500];

/// The documentation of one route.
#[derive(Clone)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: Method,
    /// Path in OpenAPI (and axum 0.8) syntax, e.g. `/v1/ports/{id}`.
    pub path: &'static str,
    /// One-line summary.
    pub summary: String,
    /// Grouping tag.
    pub tag: &'static str,
    request: Option<SchemaFn>,
    request_required: bool,
    responses: Vec<(u16, Body)>,
    query: &'static [&'static str],
    public: bool,
}

impl RouteDoc {
    /// A route with no responses yet: add each success status it answers
    /// with `.response`, `.empty` or `.text` (error statuses are added).
    pub fn new(
        method: Method,
        path: &'static str,
        tag: &'static str,
        summary: impl Into<String>,
    ) -> RouteDoc {
        RouteDoc {
            method,
            path,
            summary: summary.into(),
            tag,
            request: None,
            request_required: true,
            responses: Vec::new(),
            query: &[],
            public: false,
        }
    }

    /// The JSON request body's type.
    pub fn request<T: JsonSchema>(mut self) -> RouteDoc {
        self.request = Some(schema_of::<T>);
        self
    }

    /// The JSON request body's type, for a body that may be left out.
    pub fn optional_request<T: JsonSchema>(mut self) -> RouteDoc {
        self.request = Some(schema_of::<T>);
        self.request_required = false;
        self
    }

    /// A status the route answers with a JSON body of type `T`.
    pub fn response<T: JsonSchema>(mut self, status: u16) -> RouteDoc {
        self.responses.push((status, Body::Json(schema_of::<T>)));
        self
    }

    /// A status the route answers without a body.
    pub fn empty(mut self, status: u16) -> RouteDoc {
        self.responses.push((status, Body::Empty));
        self
    }

    /// A status the route answers with text of `media_type`.
    pub fn text(mut self, status: u16, media_type: &'static str) -> RouteDoc {
        self.responses.push((status, Body::Text(media_type)));
        self
    }

    /// Query parameters the route understands.
    pub fn query(mut self, names: &'static [&'static str]) -> RouteDoc {
        self.query = names;
        self
    }

    /// The route needs no token.
    pub fn public(mut self) -> RouteDoc {
        self.public = true;
        self
    }

    /// The success statuses declared, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|(status, _)| *status).collect()
    }

    /// The error statuses the route answers with a problem.
    pub fn errors(&self) -> Vec<u16> {
        if self.public {
            return PUBLIC_ERRORS.to_vec();
        }
        let mut errors = ERRORS.to_vec();
        if self.request.is_some() {
            errors.extend_from_slice(BODY_ERRORS);
        }
        errors.sort_unstable();
        errors
    }
}

/// An axum router that records the documentation of every route added.
pub struct ApiRouter {
    router: axum::Router<AppState>,
    docs: Vec<RouteDoc>,
}

impl Default for ApiRouter {
    fn default() -> Self {
        ApiRouter {
            router: axum::Router::new(),
            docs: Vec::new(),
        }
    }
}

impl ApiRouter {
    /// Adds a documented route.
    pub fn add(mut self, doc: RouteDoc, handler: MethodRouter<AppState>) -> ApiRouter {
        self.router = self.router.route(doc.path, handler);
        self.docs.push(doc);
        self
    }

    /// The routes added so far, as (method, path).
    pub fn routes(&self) -> Vec<(Method, &'static str)> {
        self.docs
            .iter()
            .map(|d| (d.method.clone(), d.path))
            .collect()
    }

    /// Splits into the axum router and the OpenAPI document.
    pub fn finish(self) -> (axum::Router<AppState>, Value) {
        let document = document::openapi_document(&self.docs);
        (self.router, document)
    }
}

#[cfg(test)]
mod tests;
