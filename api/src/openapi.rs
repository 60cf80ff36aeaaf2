//! The route table: the one way routes are registered, so the OpenAPI
//! document is generated from exactly the routes the server serves.

use std::collections::BTreeMap;

use axum::http::Method;
use axum::routing::MethodRouter;
use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::problem::Problem;
use crate::server::AppState;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

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
    response: Option<SchemaFn>,
    /// The success status.
    pub status: u16,
    query: &'static [&'static str],
    public: bool,
}

impl RouteDoc {
    /// A route answering `status` with no body (until `.response` is set).
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
            response: None,
            status: 200,
            query: &[],
            public: false,
        }
    }

    /// The JSON request body's type.
    pub fn request<T: JsonSchema>(mut self) -> RouteDoc {
        self.request = Some(schema_of::<T>);
        self
    }

    /// The JSON response body's type and the success status.
    pub fn response<T: JsonSchema>(mut self, status: u16) -> RouteDoc {
        self.response = Some(schema_of::<T>);
        self.status = status;
        self
    }

    /// A success status without a body.
    pub fn empty(mut self, status: u16) -> RouteDoc {
        self.status = status;
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
        let document = openapi_document(&self.docs);
        (self.router, document)
    }
}

fn parameters(doc: &RouteDoc) -> Vec<Value> {
    let mut params: Vec<Value> = doc
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name.ends_with("id") {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string"})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    params.extend(doc.query.iter().map(|name| {
        let schema = match *name {
            "limit" => {
                json!({"type": "integer", "minimum": 1, "maximum": crate::resource::MAX_LIMIT})
            }
            _ => json!({"type": "string", "format": "uuid"}),
        };
        json!({"name": name, "in": "query", "required": false, "schema": schema})
    }));
    params
}

fn operation_id(doc: &RouteDoc) -> String {
    let path: String = doc
        .path
        .trim_start_matches("/v1/")
        .replace(['{', '}'], "")
        .replace('/', "_");
    format!(
        "{}_{}",
        doc.method.as_str().to_ascii_lowercase(),
        path.trim_matches('_')
    )
}

fn openapi_document(docs: &[RouteDoc]) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let problem = generator.subschema_for::<Problem>();
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for doc in docs {
        let mut responses = Map::new();
        let success = match doc.response {
            Some(schema) => json!({
                "description": "success",
                "content": {"application/json": {"schema": schema(&mut generator)}},
            }),
            None => json!({"description": "success"}),
        };
        responses.insert(doc.status.to_string(), success);
        responses.insert(
            "default".into(),
            json!({"description": "error", "content": {"application/problem+json": {"schema": problem}}}),
        );
        let mut operation = json!({
            "summary": doc.summary,
            "operationId": operation_id(doc),
            "tags": [doc.tag],
            "parameters": parameters(doc),
            "responses": responses,
        });
        if let Some(schema) = doc.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema(&mut generator)}},
            });
        }
        if doc.public {
            operation["security"] = json!([]);
        }
        paths
            .entry(doc.path)
            .or_default()
            .insert(doc.method.as_str().to_ascii_lowercase(), operation);
    }
    let schemas: Map<String, Value> = generator
        .definitions()
        .iter()
        .map(|(name, schema)| {
            (
                name.clone(),
                serde_json::to_value(schema).unwrap_or(Value::Null),
            )
        })
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Plexus API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Provision Plexus tenant networks: routers, bridges, ports, links, routes, chains and rules.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}
