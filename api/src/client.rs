//! A typed client for the Plexus API (used by the CLI and the CNI plugin).

use std::time::Duration;

use nsdb::{Bridge, Chain, Host, IpLease, IpPool, Port, Revision, Route, Router, Rule, Tenant};
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::problem::Problem;
use crate::provision::{Attachment, AttachmentKey, AttachmentRequest};
use crate::resource::Page;
use crate::routes::tenants::IssuedToken;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API server could not be reached (retrying later may help).
    #[error("Plexus API at {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// The server refused the request.
    #[error("{0}")]
    Problem(Problem),
    /// The server answered something this client does not understand.
    #[error("unexpected answer from {url}: {reason}")]
    Protocol {
        /// The URL called.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Problem(p) => Some(p.status),
            _ => None,
        }
    }
}

/// Percent-encodes one URL path segment (everything but unreserved characters).
pub fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn attachment_path(key: &AttachmentKey) -> String {
    format!(
        "/v1/attachments/{}/{}/{}",
        path_segment(&key.network),
        path_segment(&key.container_id),
        path_segment(&key.ifname)
    )
}

/// The problem a refused call answered with (or one made of its body).
fn problem_of(status: StatusCode, bytes: &[u8]) -> Problem {
    serde_json::from_slice::<Problem>(bytes).unwrap_or_else(|_| {
        Problem::new(
            status,
            "unknown",
            "Unexpected error",
            String::from_utf8_lossy(bytes).into_owned(),
        )
    })
}

/// A client bound to one server and one token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for the API at `base_url` (e.g. `http://127.0.0.1:8470`).
    pub fn new(base_url: &str, token: &str) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApiError::Unreachable {
                url: base_url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            base: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    /// Sends one request and decodes the JSON answer (`Value::Null` for 204).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<Revision>,
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(revision) = if_match {
            request = request.header(header::IF_MATCH, format!("\"{revision}\""));
        }
        let response = request.send().await.map_err(|e| ApiError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ApiError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            let problem = problem_of(status, &bytes);
            return Err(ApiError::Problem(problem));
        }
        let bytes = if status == StatusCode::NO_CONTENT {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes).map_err(|e| ApiError::Protocol {
            url,
            reason: e.to_string(),
        })
    }

    /// Reads the server-sent events of `GET path` as they come, handing
    /// each one's name and data to `on_event` until it returns false or
    /// the stream ends.
    pub async fn stream_events(
        &self,
        path: &str,
        mut on_event: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), ApiError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: reqwest::Error| ApiError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header(header::ACCEPT, "text/event-stream")
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.map_err(unreachable)?;
            let problem = problem_of(status, &bytes);
            return Err(ApiError::Problem(problem));
        }
        let mut buffer = String::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let (mut name, mut data) = ("message".to_string(), Vec::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if !data.is_empty() && !on_event(&name, &data.join("\n")) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ApiError> {
        self.call(Method::POST, path, Some(body), None).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ApiError> {
        self.call(Method::PUT, path, Some(body), None).await
    }

    /// `PATCH path` with the fields to change, optionally only at `if_match`.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &Value,
        if_match: Option<Revision>,
    ) -> Result<T, ApiError> {
        self.call(Method::PATCH, path, Some(fields), if_match).await
    }

    /// `DELETE path`, optionally only at `if_match`.
    pub async fn delete(&self, path: &str, if_match: Option<Revision>) -> Result<(), ApiError> {
        self.call::<Value>(Method::DELETE, path, None, if_match)
            .await
            .map(|_| ())
    }

    /// Every item of a listing, following pagination.
    pub async fn list<T: DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, ApiError> {
        let mut items = Vec::new();
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut next: Option<Uuid> = None;
        loop {
            let url = match next {
                Some(after) => format!("{path}{separator}after={after}"),
                None => path.to_string(),
            };
            let page: Page<T> = self.get(&url).await?;
            items.extend(page.items);
            match page.next_after {
                Some(after) => next = Some(after),
                None => return Ok(items),
            }
        }
    }

    /// `POST /v1/batch`: the operations in one transaction.
    pub async fn batch(
        &self,
        operations: Vec<crate::routes::batch::BatchOperation>,
    ) -> Result<crate::routes::batch::BatchResult, ApiError> {
        let body = serde_json::to_value(crate::routes::batch::BatchRequest { operations })
            .map_err(|e| ApiError::Protocol {
                url: format!("{}/v1/batch", self.base),
                reason: e.to_string(),
            })?;
        self.post("/v1/batch", &body).await
    }

    /// Creates a tenant (admin).
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, ApiError> {
        self.post("/v1/tenants", &json!({ "name": name })).await
    }

    /// Issues a tenant-scoped token (admin).
    pub async fn issue_tenant_token(
        &self,
        tenant: Uuid,
        description: &str,
    ) -> Result<IssuedToken, ApiError> {
        self.post(
            &format!("/v1/tenants/{tenant}/tokens"),
            &json!({ "description": description }),
        )
        .await
    }

    /// Issues a tenant-scoped token that stops working after `expires_in`
    /// seconds (admin).
    pub async fn issue_expiring_token(
        &self,
        tenant: Uuid,
        description: &str,
        expires_in: u64,
    ) -> Result<IssuedToken, ApiError> {
        self.post(
            &format!("/v1/tenants/{tenant}/tokens"),
            &json!({ "description": description, "expires_in": expires_in }),
        )
        .await
    }

    /// The tenant tokens the caller may see (never their secrets).
    pub async fn list_tokens(&self) -> Result<Vec<crate::routes::tokens::TokenInfo>, ApiError> {
        self.list("/v1/tokens").await
    }

    /// Revokes a tenant token: it answers 401 at once on every API server.
    pub async fn revoke_token(&self, id: Uuid) -> Result<(), ApiError> {
        self.delete(&format!("/v1/tokens/{id}"), None).await
    }

    /// Creates a router.
    pub async fn create_router(&self, tenant: Uuid, name: &str) -> Result<Router, ApiError> {
        self.post("/v1/routers", &json!({ "tenant_id": tenant, "name": name }))
            .await
    }

    /// Creates a bridge.
    pub async fn create_bridge(&self, tenant: Uuid, name: &str) -> Result<Bridge, ApiError> {
        self.post("/v1/bridges", &json!({ "tenant_id": tenant, "name": name }))
            .await
    }

    /// Creates a port on a bridge; `fields` may set mac, chains, allowed addresses.
    pub async fn create_bridge_port(&self, bridge: Uuid, fields: Value) -> Result<Port, ApiError> {
        self.post(&format!("/v1/bridges/{bridge}/ports"), &fields)
            .await
    }

    /// Creates a router port with an address such as `10.0.1.1/24`.
    pub async fn create_router_port(&self, router: Uuid, address: &str) -> Result<Port, ApiError> {
        self.post(
            &format!("/v1/routers/{router}/ports"),
            &json!({ "address": address }),
        )
        .await
    }

    /// Links two ports.
    pub async fn link(&self, port: Uuid, peer: Uuid) -> Result<Port, ApiError> {
        self.put(
            &format!("/v1/ports/{port}/link"),
            &json!({ "peer_id": peer }),
        )
        .await
    }

    /// Binds a port to an interface on a host (admin).
    pub async fn bind(
        &self,
        port: Uuid,
        host: Uuid,
        interface_name: &str,
    ) -> Result<Port, ApiError> {
        self.put(
            &format!("/v1/ports/{port}/binding"),
            &json!({ "host_id": host, "interface_name": interface_name }),
        )
        .await
    }

    /// Removes a port's binding (`DELETE /v1/ports/{id}/binding`).
    pub async fn unbind(&self, port: Uuid) -> Result<(), ApiError> {
        self.delete(&format!("/v1/ports/{port}/binding"), None)
            .await
    }

    /// Adds a route to a router.
    pub async fn create_route(&self, router: Uuid, route: Value) -> Result<Route, ApiError> {
        self.post(&format!("/v1/routers/{router}/routes"), &route)
            .await
    }

    /// Creates a chain.
    pub async fn create_chain(&self, tenant: Uuid, name: &str) -> Result<Chain, ApiError> {
        self.post("/v1/chains", &json!({ "tenant_id": tenant, "name": name }))
            .await
    }

    /// Inserts a rule into a chain.
    pub async fn create_rule(&self, chain: Uuid, rule: Value) -> Result<Rule, ApiError> {
        self.post(&format!("/v1/chains/{chain}/rules"), &rule).await
    }

    /// Registers a host (admin).
    pub async fn create_host(&self, name: &str, tunnel_ip: &str) -> Result<Host, ApiError> {
        self.post(
            "/v1/hosts",
            &json!({ "name": name, "tunnel_ip": tunnel_ip }),
        )
        .await
    }

    /// Creates an IP pool (admin).
    pub async fn create_ip_pool(&self, name: &str, cidr: &str) -> Result<IpPool, ApiError> {
        self.post("/v1/ip_pools", &json!({ "name": name, "cidr": cidr }))
            .await
    }

    /// Initialises a tenant's default network (admin; idempotent): the
    /// network, and whether this call created it.
    pub async fn init_tenant_network(
        &self,
        tenant: Uuid,
        pod_cidr: Option<&str>,
    ) -> Result<crate::TenantNetwork, ApiError> {
        self.init_tenant_network_with(tenant, pod_cidr, false).await
    }

    /// [`Client::init_tenant_network`], optionally accepting NAT-only
    /// reachability from the host (for a pod subnet that overlaps another
    /// tenant's).
    pub async fn init_tenant_network_with(
        &self,
        tenant: Uuid,
        pod_cidr: Option<&str>,
        nat_only: bool,
    ) -> Result<crate::TenantNetwork, ApiError> {
        self.init_tenant_network_on(tenant, (pod_cidr, None), nat_only)
            .await
    }

    /// [`Client::init_tenant_network_with`], also naming the IPv6 pod
    /// prefix of a dual-stack network (`pod_cidrs`: IPv4, IPv6).
    pub async fn init_tenant_network_on(
        &self,
        tenant: Uuid,
        (pod_cidr, pod_cidr6): (Option<&str>, Option<&str>),
        nat_only: bool,
    ) -> Result<crate::TenantNetwork, ApiError> {
        let mut body = json!({});
        if let Some(cidr) = pod_cidr {
            body["pod_cidr"] = json!(cidr);
        }
        if let Some(cidr) = pod_cidr6 {
            body["pod_cidr6"] = json!(cidr);
        }
        if nat_only {
            body["nat_only"] = json!(true);
        }
        self.post(&format!("/v1/tenants/{tenant}/network"), &body)
            .await
    }

    /// A tenant's default network; `None` when it was never initialised.
    pub async fn tenant_network(
        &self,
        tenant: Uuid,
    ) -> Result<Option<crate::TenantNetwork>, ApiError> {
        match self.get(&format!("/v1/tenants/{tenant}/network")).await {
            Ok(network) => Ok(Some(network)),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates a floating IP for a pod address of a tenant (admin).
    pub async fn create_floating_ip(
        &self,
        tenant: Uuid,
        fixed_address: &str,
        floating_address: Option<&str>,
    ) -> Result<nsdb::FloatingIp, ApiError> {
        let mut body = json!({ "tenant_id": tenant, "fixed_address": fixed_address });
        if let Some(address) = floating_address {
            body["floating_address"] = json!(address);
        }
        self.post("/v1/floating_ips", &body).await
    }

    /// Leases an address of `pool` to `owner` (admin; idempotent per owner).
    pub async fn allocate_lease(&self, pool: Uuid, owner: &str) -> Result<IpLease, ApiError> {
        self.post(
            &format!("/v1/ip_pools/{pool}/leases"),
            &json!({ "owner": owner }),
        )
        .await
    }

    /// Releases `owner`'s lease in `pool` (admin; fine when it held none).
    pub async fn release_lease(&self, pool: Uuid, owner: &str) -> Result<(), ApiError> {
        self.delete(
            &format!("/v1/ip_pools/{pool}/leases/{}", path_segment(owner)),
            None,
        )
        .await
    }

    /// Creates the attachment `key`, or answers the existing one (admin).
    pub async fn put_attachment(
        &self,
        key: &AttachmentKey,
        request: &AttachmentRequest,
    ) -> Result<Attachment, ApiError> {
        let body = serde_json::to_value(request).map_err(|e| ApiError::Protocol {
            url: attachment_path(key),
            reason: e.to_string(),
        })?;
        self.put(&attachment_path(key), &body).await
    }

    /// The attachment `key`; `None` when there is none (admin).
    pub async fn attachment(&self, key: &AttachmentKey) -> Result<Option<Attachment>, ApiError> {
        match self.get(&attachment_path(key)).await {
            Ok(attachment) => Ok(Some(attachment)),
            Err(error) if error.status() == Some(404) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes the attachment `key`; fine when there is none (admin).
    pub async fn delete_attachment(&self, key: &AttachmentKey) -> Result<(), ApiError> {
        self.delete(&attachment_path(key), None).await
    }

    /// The attachments bound on `host` (every one with `None`), optionally
    /// only those of CNI network `network` (admin).
    pub async fn attachments(
        &self,
        host: Option<Uuid>,
        network: Option<&str>,
    ) -> Result<Vec<Attachment>, ApiError> {
        let mut query = Vec::new();
        if let Some(host) = host {
            query.push(format!("host_id={host}"));
        }
        if let Some(network) = network {
            query.push(format!("network={}", path_segment(network)));
        }
        let path = if query.is_empty() {
            "/v1/attachments".to_string()
        } else {
            format!("/v1/attachments?{}", query.join("&"))
        };
        let page: Page<Attachment> = self.get(&path).await?;
        Ok(page.items)
    }
}
