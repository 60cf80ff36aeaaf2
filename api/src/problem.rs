//! RFC 9457 problem details: the body of every error the API returns.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nsdb::{NsdbError, StoreError};
use serde::{Deserialize, Serialize};

/// An `application/problem+json` error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Problem {
    /// A URI naming the problem type, e.g. `/problems/duplicate`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, naming the offending field.
    pub detail: String,
    /// The request field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<Box<str>>,
    /// For deletes refused because of references: who still refers.
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    pub referrers: Box<[String]>,
}

impl Problem {
    /// A problem of type `/problems/{slug}`.
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem {
            problem_type: format!("/problems/{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            referrers: Box::default(),
        }
    }

    /// Names the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into().into_boxed_str());
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// 401: no or an unknown credential.
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send a valid token as 'Authorization: Bearer <token>'",
        )
    }

    /// 403: the caller may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 404: no such object (or not visible to the caller).
    pub fn not_found(what: impl std::fmt::Display) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} not found"),
        )
    }

    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            let headers = response.headers_mut();
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<NsdbError> for Problem {
    fn from(error: NsdbError) -> Problem {
        let detail = error.to_string();
        match error {
            NsdbError::NotFound { kind, id } => Problem::not_found(format!("{kind} {id}")),
            NsdbError::AlreadyExists { .. } => Problem::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Already exists",
                detail,
            )
            .with_field("id"),
            NsdbError::RevisionConflict { .. } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "revision-conflict",
                "The object changed since the given revision",
                detail,
            ),
            NsdbError::MissingReference { field, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing-reference",
                "A referenced object does not exist",
                detail,
            )
            .with_field(field),
            NsdbError::StillReferenced { referrers, .. } => Problem {
                referrers: referrers.iter().map(ToString::to_string).collect(),
                ..Problem::new(
                    StatusCode::CONFLICT,
                    "still-referenced",
                    "Still referenced",
                    detail,
                )
            },
            NsdbError::Duplicate { constraint, .. } => {
                let field = match constraint.as_str() {
                    "name" => "name",
                    "mac on device" => "mac",
                    "tunnel key" => "tunnel_key",
                    "interface binding on host" => "interface_name",
                    "position in chain" => "position",
                    "subnet on router" => "address",
                    "one load balancer per router" => "router_id",
                    "address, protocol and port on the load balancer" => "address",
                    "address and port in pool" => "address",
                    "one health monitor per pool" => "pool_id",
                    _ => "",
                };
                Problem::new(StatusCode::CONFLICT, "duplicate", "Duplicate value", detail)
                    .with_field(field)
            }
            NsdbError::Invalid { field, .. } => Problem::bad_request(detail).with_field(field),
            NsdbError::OutOfScope { .. } => Problem::forbidden(detail).with_field("tenant_id"),
            NsdbError::Rejected { field, .. } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                "The change breaks a topology rule",
                detail,
            )
            .with_field(field),
            NsdbError::PodSubnetOverlap { .. } => Problem::new(
                StatusCode::CONFLICT,
                "pod-subnet-overlap",
                "Pod subnet overlaps another tenant's",
                detail,
            )
            .with_field("network"),
            NsdbError::PoolExhausted { .. } => Problem::new(
                StatusCode::CONFLICT,
                "pool-exhausted",
                "IP pool exhausted",
                detail,
            ),
            NsdbError::Contention { .. } => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "contention",
                "Too many concurrent writers; retry",
                detail,
            ),
            NsdbError::Store(StoreError::Unavailable(_))
            | NsdbError::Store(StoreError::Compacted { .. }) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "nsdb-unavailable",
                "NSDB unavailable",
                detail,
            ),
            NsdbError::Store(_) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "nsdb-error",
                "NSDB error",
                detail,
            ),
        }
    }
}
