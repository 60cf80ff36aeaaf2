//! Builds the OpenAPI 3.0 document from the route table, and makes the
//! schemas schemars generates say exactly what the server sends.

use std::collections::BTreeMap;

use schemars::gen::SchemaSettings;
use schemars::schema::Schema;
use serde_json::{json, Map, Value};

use super::{ip_schemas, Body, RouteDoc};
use crate::problem::Problem;

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
            "network" => json!({"type": "string"}),
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

/// The reason phrase of a status, as the response's description.
fn describe(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("answer")
}

/// The document of `docs`.
pub(super) fn openapi_document(docs: &[RouteDoc]) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let problem = exact_value(generator.subschema_for::<Problem>());
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for doc in docs {
        let mut responses = Map::new();
        for (status, body) in &doc.responses {
            let content = match body {
                Body::Empty => None,
                Body::Json(schema) => {
                    let schema = exact_value(schema(&mut generator));
                    Some(json!({"application/json": {"schema": schema}}))
                }
                Body::Text(media) => Some(json!({ *media: {"schema": {"type": "string"}} })),
            };
            let mut response = json!({"description": describe(*status)});
            if let Some(content) = content {
                response["content"] = content;
            }
            responses.insert(status.to_string(), response);
        }
        for status in doc.errors() {
            responses.insert(
                status.to_string(),
                json!({
                    "description": describe(status),
                    "content": {"application/problem+json": {"schema": problem}},
                }),
            );
        }
        let mut operation = json!({
            "summary": doc.summary,
            "operationId": operation_id(doc),
            "tags": [doc.tag],
            "parameters": parameters(doc),
            "responses": responses,
        });
        if let Some(schema) = doc.request {
            let schema = exact_value(schema(&mut generator));
            operation["requestBody"] = json!({
                "required": doc.request_required,
                "content": {"application/json": {"schema": schema}},
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
    let mut schemas: Map<String, Value> = generator
        .definitions()
        .iter()
        .map(|(name, schema)| {
            (
                name.clone(),
                serde_json::to_value(schema).unwrap_or(Value::Null),
            )
        })
        .collect();
    ip_schemas::replace_networks(&mut schemas);
    for schema in schemas.values_mut() {
        exact(schema);
    }
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

/// A generated schema as JSON, made [`exact`].
fn exact_value(schema: Schema) -> Value {
    let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
    exact(&mut value);
    value
}

/// Rewrites a generated schema (and its subschemas) into what OpenAPI 3.0
/// means by it: keywords beside a `$ref` are ignored there, so a `$ref`
/// with a description or `nullable` becomes an `allOf` of the reference;
/// `examples` (not a 3.0 keyword) becomes `example`; `format: ip` becomes
/// a pattern.
fn exact(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    for (key, value) in object.iter_mut() {
        match key.as_str() {
            "properties" => value
                .as_object_mut()
                .into_iter()
                .flat_map(|p| p.values_mut())
                .for_each(exact),
            "items" | "not" | "additionalProperties" => exact(value),
            "allOf" | "anyOf" | "oneOf" => {
                value.as_array_mut().into_iter().flatten().for_each(exact)
            }
            _ => {}
        }
    }
    if object.len() > 1 {
        if let Some(reference) = object.remove("$ref") {
            object.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
    }
    if let Some(Value::Array(examples)) = object.remove("examples") {
        if let Some(first) = examples.into_iter().next() {
            object.insert("example".into(), first);
        }
    }
    ip_schemas::fix_ip_addr(object);
}
