//! Every answer a [`TestServer`](super::api::TestServer) gives is checked
//! against the server's own OpenAPI document: the operation (method and
//! path template) must exist, the status must be declared for it, the
//! content type must be one declared for that status (or none, for an
//! empty response), and a JSON body must validate against the declared
//! schema with a real JSON Schema validator (`jsonschema`, draft 2020-12).
//!
//! OpenAPI 3.0 schema objects are not quite JSON Schema; [`json_schema`]
//! translates them: `nullable` adds `null`, keywords beside a `$ref` are
//! dropped (OpenAPI 3.0 ignores them), and an object that lists its
//! `properties` without saying anything about others gets
//! `unevaluatedProperties: false`, so a member the server sends but the
//! document does not declare is drift too.
//!
//! The check runs as a middleware in front of the test server, so it sees
//! every response, whichever client sent the request. Violations fail the
//! test owning the server (when it drops the server). When the environment
//! names a report file ([`REPORT_ENV`]), every checked response is
//! appended to it as one line, for [`read_report`].

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Map, Value};

/// The environment variable naming the file every checked response is
/// appended to.
pub const REPORT_ENV: &str = "PLEXUS_OPENAPI_REPORT";

/// The violations one server has seen.
pub type Violations = Arc<Mutex<Vec<String>>>;

/// One documented operation.
struct Operation {
    method: String,
    template: String,
    segments: Vec<Option<String>>,
    responses: Map<String, Value>,
}

/// The document, its operations and compiled validators.
pub struct Checker {
    operations: Vec<Operation>,
    components: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The checker over the document the API serves (built once per process).
pub fn checker() -> &'static Checker {
    static CHECKER: OnceLock<Checker> = OnceLock::new();
    CHECKER.get_or_init(|| Checker::new(&document()))
}

/// The OpenAPI document, as `GET /openapi.json` serves it.
pub fn document() -> Value {
    ::api::api_routes().finish().1
}

/// `METHOD template` of every documented operation.
pub fn operations(document: &Value) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, _) in item.as_object().into_iter().flatten() {
            all.insert(format!("{} {path}", method.to_ascii_uppercase()));
        }
    }
    all
}

/// Translates an OpenAPI 3.0 schema object into JSON Schema 2020-12.
pub fn json_schema(schema: &Value) -> Value {
    let Some(object) = schema.as_object() else {
        return schema.clone();
    };
    if let Some(reference) = object.get("$ref") {
        return json!({ "$ref": reference });
    }
    let mut out = Map::new();
    for (key, value) in object {
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, s)| (name.clone(), json_schema(s)))
                    .collect(),
            ),
            "items" | "not" => json_schema(value),
            "additionalProperties" if value.is_object() => json_schema(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(json_schema)
                    .collect(),
            ),
            "nullable" => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    if out.contains_key("properties") && !out.contains_key("additionalProperties") {
        out.insert("unevaluatedProperties".into(), Value::Bool(false));
    }
    if object.get("nullable") == Some(&Value::Bool(true)) {
        return nullable(out);
    }
    Value::Object(out)
}

fn nullable(mut schema: Map<String, Value>) -> Value {
    match schema.get("type").cloned() {
        Some(Value::String(kind)) => {
            schema.insert("type".into(), json!([kind, "null"]));
            if let Some(Value::Array(values)) = schema.get_mut("enum") {
                values.push(Value::Null);
            }
            Value::Object(schema)
        }
        _ => json!({ "anyOf": [Value::Object(schema), { "type": "null" }] }),
    }
}

impl Checker {
    /// Indexes `document`'s operations.
    pub fn new(document: &Value) -> Checker {
        let mut operations = Vec::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                operations.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: path.clone(),
                    segments: path
                        .split('/')
                        .map(|s| {
                            if s.starts_with('{') && s.ends_with('}') {
                                None
                            } else {
                                Some(s.to_string())
                            }
                        })
                        .collect(),
                    responses: operation["responses"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                });
            }
        }
        let schemas: Map<String, Value> = document["components"]["schemas"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, s)| (name.clone(), json_schema(s)))
            .collect();
        Checker {
            operations,
            components: json!({ "schemas": schemas }),
            validators: Mutex::default(),
        }
    }

    /// The operations whose template matches `path`, most literal first.
    fn matching(&self, path: &str) -> Vec<&Operation> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut found: Vec<&Operation> = self
            .operations
            .iter()
            .filter(|op| {
                op.segments.len() == segments.len()
                    && op.segments.iter().zip(&segments).all(|(t, s)| match t {
                        Some(literal) => literal == s,
                        None => !s.is_empty(),
                    })
            })
            .collect();
        found.sort_by_key(|op| std::cmp::Reverse(op.segments.iter().flatten().count()));
        let best = found.first().map(|op| op.segments.iter().flatten().count());
        found.retain(|op| Some(op.segments.iter().flatten().count()) == best);
        found
    }

    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let mut root = json_schema(schema);
        if let Value::Object(object) = &mut root {
            object.insert("components".into(), self.components.clone());
        }
        let key = schema.to_string();
        let mut cache = self.validators.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache.get(&key) {
            return Ok(found.clone());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| format!("the declared schema does not compile: {e}"))?;
        let validator = Arc::new(validator);
        cache.insert(key, validator.clone());
        Ok(validator)
    }

    /// Checks one answer; `Ok` names the operation and status it exercised.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<String, String> {
        let candidates = self.matching(path);
        let Some(operation) = candidates
            .iter()
            .find(|op| op.method == method)
            .or_else(|| {
                candidates
                    .iter()
                    .find(|op| method == "HEAD" && op.method == "GET")
            })
        else {
            // Outside the document: the server must say so in a problem.
            let expected = if candidates.is_empty() { 404 } else { 405 };
            if status != expected {
                return Err(format!(
                    "{method} {path}: no such operation in the document, yet answered {status}"
                ));
            }
            let problem = json!({ "$ref": "#/components/schemas/Problem" });
            self.check_body(&problem, content_type, body, "application/problem+json")?;
            return Ok(format!("(undocumented) {status}"));
        };
        let name = format!("{} {}", operation.method, operation.template);
        let Some(declared) = operation.responses.get(&status.to_string()) else {
            return Err(format!(
                "{name}: answered {status}, the document declares only {:?}",
                operation.responses.keys().collect::<Vec<_>>()
            ));
        };
        let media = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|c| !c.is_empty());
        match (declared.get("content").and_then(Value::as_object), media) {
            (None, None) if body.is_empty() => {}
            (None, _) => {
                return Err(format!(
                    "{name} {status}: the document declares no body, got {content_type:?} {:?}",
                    String::from_utf8_lossy(body)
                ))
            }
            (Some(content), media) => {
                let media = media.unwrap_or_default();
                let Some(entry) = content.get(&media) else {
                    return Err(format!(
                        "{name} {status}: content type {media:?}, the document declares {:?}",
                        content.keys().collect::<Vec<_>>()
                    ));
                };
                if let Some(schema) = entry.get("schema") {
                    self.check_body(schema, content_type, body, &media)
                        .map_err(|e| format!("{name} {status}: {e}"))?;
                }
            }
        }
        Ok(format!("{name} {status}"))
    }

    fn check_body(
        &self,
        schema: &Value,
        content_type: Option<&str>,
        body: &[u8],
        media: &str,
    ) -> Result<(), String> {
        let text = String::from_utf8_lossy(body);
        let instance = if media == "application/json" || media.ends_with("+json") {
            if !content_type.is_some_and(|c| c.starts_with(media)) {
                return Err(format!("content type {content_type:?}, expected {media}"));
            }
            serde_json::from_slice::<Value>(body)
                .map_err(|e| format!("the body is not JSON ({e}): {text}"))?
        } else {
            Value::String(text.to_string())
        };
        let validator = self.validator(schema)?;
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("at '{}': {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the body does not match {schema}: {} in {text}",
                errors.join("; ")
            ))
        }
    }
}

fn report_line(line: &str) {
    static FILE: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = std::env::var_os(REPORT_ENV)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the OpenAPI report file");
        Some(Mutex::new(file))
    });
    if let Some(file) = file {
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(format!("{line}\n").as_bytes())
            .expect("append to the OpenAPI report");
    }
}

/// The middleware: passes the request on, reads the whole answer, checks
/// it, records the outcome and hands the answer back unchanged.
pub async fn middleware(
    State(violations): State<Violations>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let message = format!("{method} {path}: cannot read the answer: {error}");
            report_line(&format!("violation\t{message}"));
            violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(message);
            return Response::from_parts(parts, Body::empty());
        }
    };
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match checker().check(&method, &path, parts.status.as_u16(), content_type, &bytes) {
        Ok(exercised) => report_line(&format!("ok\t{exercised}")),
        Err(message) => {
            report_line(&format!("violation\t{message}"));
            violations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(message);
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// What a report file says.
#[derive(Debug, Default)]
pub struct Report {
    /// How many answers were checked.
    pub responses: usize,
    /// `METHOD template status` of every answer that matched the document.
    pub exercised: BTreeSet<String>,
    /// Every answer that did not.
    pub violations: Vec<String>,
}

impl Report {
    /// `METHOD template` of every documented operation that answered a
    /// status `wanted` accepts.
    pub fn operations(&self, wanted: impl Fn(u16) -> bool) -> BTreeSet<String> {
        self.exercised
            .iter()
            .filter(|e| !e.starts_with('('))
            .filter_map(|e| e.rsplit_once(' '))
            .filter(|(_, status)| status.parse().is_ok_and(&wanted))
            .map(|(op, _)| op.to_string())
            .collect()
    }
}

/// Reads a report file written under [`REPORT_ENV`].
pub fn read_report(path: &std::path::Path) -> Report {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut report = Report::default();
    for line in text.lines() {
        report.responses += 1;
        match line.split_once('\t') {
            Some(("ok", what)) => {
                report.exercised.insert(what.to_string());
            }
            Some((_, what)) => report.violations.push(what.to_string()),
            None => report.violations.push(format!("unreadable line {line:?}")),
        }
    }
    report
}

/// Runs every test of the current test binary except `this` in a child
/// process with the report on, fails when any of them failed, and returns
/// the report.
pub fn run_this_binary(this: &str) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("openapi-report.tsv");
    let exe = std::env::current_exe().expect("the test binary");
    let output = std::process::Command::new(exe)
        .args(["--skip", this])
        .env(REPORT_ENV, &path)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = stdout
        .lines()
        .filter(|l| l.starts_with("test result") || l.contains("FAILED") || l.contains("panicked"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("the API suite under the checker:\n{summary}");
    let report = read_report(&path);
    assert!(
        output.status.success() || !report.violations.is_empty(),
        "the API suite failed:\n{stdout}\n{stderr}"
    );
    report
}
