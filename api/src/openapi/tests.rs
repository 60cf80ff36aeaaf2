//! The document against a real JSON Schema validator.

use serde_json::{json, Value};

use crate::server::api_routes;

fn document() -> Value {
    api_routes().finish().1
}

/// How many branches of `component`'s `oneOf` accept `value`, and whether
/// the component as a whole does.
fn branches(document: &Value, component: &str, value: &str) -> (usize, bool) {
    let schemas = &document["components"]["schemas"];
    let validator = |schema: &Value| {
        let mut root = schema.clone();
        root["components"] = json!({ "schemas": schemas });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .expect("the schema compiles")
    };
    let schema = &schemas[component];
    let matching = schema["oneOf"]
        .as_array()
        .expect("a oneOf")
        .iter()
        .filter(|branch| validator(branch).is_valid(&json!(value)))
        .count();
    (matching, validator(schema).is_valid(&json!(value)))
}

#[test]
fn every_ip_network_matches_exactly_one_branch() {
    let document = document();
    for value in [
        "10.0.0.0/8",
        "0.0.0.0/0",
        "192.168.1.7/32",
        "fd00::/32",
        "::/0",
        "2001:db8::1/128",
        "::ffff:10.0.0.1/128",
    ] {
        assert_eq!(
            branches(&document, "IpNet", value),
            (1, true),
            "{value} must match exactly one branch of IpNet"
        );
    }
    for value in [
        "10.0.0.0",
        "256.0.0.0/8",
        "10.0.0.0/33",
        "fd00::/129",
        "name/8",
        "",
    ] {
        assert_eq!(
            branches(&document, "IpNet", value),
            (0, false),
            "{value} is no network"
        );
    }
}

#[test]
fn ip_addresses_are_a_pattern_not_an_unknown_format() {
    let pattern = super::ip_schemas::ip_addr_pattern();
    let text = document().to_string();
    assert!(!text.contains(r#""format":"ip""#), "format: ip is left");
    let schema = json!({ "type": "string", "pattern": pattern });
    for good in ["10.0.0.1", "fd00::1", "::", "::ffff:1.2.3.4"] {
        assert!(jsonschema::is_valid(&schema, &json!(good)), "{good}");
    }
    for bad in ["10.0.0.256", "10.0.0.0/8", "host", "1.2.3"] {
        assert!(!jsonschema::is_valid(&schema, &json!(bad)), "{bad}");
    }
}

/// The declared statuses of `method path`.
fn statuses(document: &Value, method: &str, path: &str) -> Vec<u16> {
    document["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .map(|s| s.parse().expect("a status, not 'default'"))
        .collect()
}

#[test]
fn every_route_declares_its_statuses() {
    let document = document();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("methods").keys() {
            let declared = statuses(&document, method, path);
            assert!(
                declared.iter().any(|s| (200..300).contains(s)),
                "{method} {path} declares no success: {declared:?}"
            );
        }
    }
    let successes = |method, path| {
        let all = statuses(&document, method, path);
        all.into_iter().filter(|s| *s < 400).collect::<Vec<u16>>()
    };
    assert_eq!(successes("post", "/v1/tenants/{id}/network"), [200, 201]);
    assert_eq!(successes("delete", "/v1/tenants/{id}/network"), [204]);
    assert_eq!(successes("delete", "/v1/floating_ips/{id}"), [204]);
    assert_eq!(
        successes("put", "/v1/attachments/{network}/{container_id}/{ifname}"),
        [200, 201]
    );
    let problem = &document["paths"]["/v1/tenants/{id}/network"]["post"]["responses"]["409"];
    assert_eq!(
        problem["content"]["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let network = &document["paths"]["/v1/tenants/{id}/network"]["post"];
    assert_eq!(
        network["requestBody"]["required"], false,
        "the body may be left out"
    );
    let empty = &document["paths"]["/v1/floating_ips/{id}"]["delete"]["responses"]["204"];
    assert!(empty.get("content").is_none(), "a 204 has no body: {empty}");
}

#[test]
fn nullable_references_are_wrapped_so_null_is_allowed() {
    let document = document();
    let address = &document["components"]["schemas"]["Port"]["properties"]["address"];
    assert_eq!(address["nullable"], true, "{address}");
    assert!(
        address.get("$ref").is_none(),
        "OpenAPI 3.0 ignores $ref siblings: {address}"
    );
    assert_eq!(address["allOf"][0]["$ref"], "#/components/schemas/IpNet");
}
