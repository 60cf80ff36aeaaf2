//! The generic REST machinery: how any NSDB record kind is listed, read,
//! created, patched and deleted, with tenant scoping applied uniformly.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nsdb::{Bridge, Chain, Kind, Nsdb, NsdbError, Record, Resource, Router};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::extract::{from_json, IfMatch, JsonObject, Path, Query};
use crate::problem::Problem;
use crate::server::AppState;

/// How the API exposes one record kind.
pub trait ApiResource: Resource + JsonSchema + Serialize {
    /// The collection's path segment, e.g. `routers`.
    const COLLECTION: &'static str;
    /// Only the admin token may see or change these (provider infrastructure).
    const ADMIN_ONLY: bool = false;
    /// Fields a PATCH may not change, and what to do instead.
    const FIXED: &'static [(&'static str, &'static str)] = &[];
}

macro_rules! api_resource {
    ($ty:ty, $collection:literal $(, admin_only = $admin:literal)? $(, fixed = [$(($f:literal, $why:literal)),* $(,)?])?) => {
        impl ApiResource for $ty {
            const COLLECTION: &'static str = $collection;
            $(const ADMIN_ONLY: bool = $admin;)?
            $(const FIXED: &'static [(&'static str, &'static str)] = &[$(($f, $why)),*];)?
        }
    };
}

const TENANT_FIXED: (&str, &str) = ("tenant_id", "an object cannot move to another tenant");

api_resource!(
    nsdb::Tenant,
    "tenants",
    fixed = [("network", "use POST or DELETE /v1/tenants/{id}/network")]
);
api_resource!(nsdb::Provider, "provider", admin_only = true);
api_resource!(
    nsdb::FloatingIp,
    "floating_ips",
    admin_only = true,
    fixed = [
        (
            "floating_address",
            "delete the floating IP and create another"
        ),
        ("fixed_address", "delete the floating IP and create another"),
        ("router_id", "delete the floating IP and create another"),
        ("dnat_rule_id", "the floating IP owns its rules"),
        ("snat_rule_id", "the floating IP owns its rules"),
        ("route_id", "the floating IP owns its route"),
    ]
);
api_resource!(
    nsdb::Router,
    "routers",
    fixed = [("tenant_id", "an object cannot move to another tenant")]
);
api_resource!(
    nsdb::Bridge,
    "bridges",
    fixed = [
        ("tenant_id", "an object cannot move to another tenant"),
        (
            "tunnel_key",
            "the tunnel key is fixed for the bridge's lifetime"
        ),
    ]
);
api_resource!(
    nsdb::Port,
    "ports",
    fixed = [
        ("device_id", "a port cannot move to another device"),
        ("device_type", "a port cannot move to another device"),
        ("peer_id", "use PUT/DELETE /v1/ports/{id}/link"),
        ("host_id", "use PUT/DELETE /v1/ports/{id}/binding"),
        ("interface_name", "use PUT/DELETE /v1/ports/{id}/binding"),
        (
            "tunnel_key",
            "the tunnel key is fixed for the port's lifetime"
        ),
    ]
);
api_resource!(
    nsdb::Route,
    "routes",
    fixed = [("router_id", "a route cannot move to another router")]
);
api_resource!(
    nsdb::Chain,
    "chains",
    fixed = [("tenant_id", "an object cannot move to another tenant")]
);
api_resource!(
    nsdb::Rule,
    "rules",
    fixed = [
        ("chain_id", "a rule cannot move to another chain"),
        ("position", "use PUT /v1/rules/{id}/position to move it")
    ]
);
api_resource!(
    nsdb::PortGroup,
    "port_groups",
    fixed = [("tenant_id", "an object cannot move to another tenant")]
);
api_resource!(
    nsdb::IpAddressGroup,
    "ip_address_groups",
    fixed = [("tenant_id", "an object cannot move to another tenant")]
);
api_resource!(
    nsdb::Host,
    "hosts",
    admin_only = true,
    fixed = [("alive", "liveness is reported by the host's agent")]
);
api_resource!(
    nsdb::IpPool,
    "ip_pools",
    admin_only = true,
    fixed = [
        ("cidr", "a pool's prefix is fixed"),
        ("gateway", "a pool's gateway is fixed")
    ]
);

api_resource!(
    nsdb::LoadBalancer,
    "load_balancers",
    fixed = [
        ("tenant_id", "an object cannot move to another tenant"),
        (
            "router_id",
            "delete the load balancer and create one on the other router"
        )
    ]
);
api_resource!(
    nsdb::Pool,
    "pools",
    fixed = [
        ("tenant_id", "an object cannot move to another tenant"),
        (
            "load_balancer_id",
            "a pool cannot move to another load balancer"
        )
    ]
);
api_resource!(
    nsdb::Vip,
    "vips",
    fixed = [
        ("tenant_id", "an object cannot move to another tenant"),
        (
            "load_balancer_id",
            "a VIP cannot move to another load balancer"
        )
    ]
);
api_resource!(
    nsdb::PoolMember,
    "members",
    fixed = [
        ("tenant_id", "an object cannot move to another tenant"),
        ("pool_id", "a member cannot move to another pool"),
        (
            "health",
            "health is written by the agents running the pool's monitor"
        )
    ]
);
api_resource!(
    nsdb::HealthMonitor,
    "health_monitors",
    fixed = [
        ("tenant_id", "an object cannot move to another tenant"),
        ("pool_id", "a monitor cannot move to another pool")
    ]
);

/// One page of a listing.
#[derive(Debug, Serialize, serde::Deserialize, JsonSchema)]
pub struct Page<T> {
    /// The objects, in id order.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<Uuid>,
}

/// The tenant that owns a record (following devices, routers and chains).
pub async fn owner_tenant(nsdb: &Nsdb, record: &Record) -> Result<Option<Uuid>, Problem> {
    let parent = match record {
        Record::Tenant(t) => return Ok(Some(t.id)),
        Record::Port(p) => {
            nsdb.get_record(device_kind(p.device_type), p.device_id)
                .await?
        }
        Record::Route(r) => nsdb.get_record(Kind::Router, r.router_id).await?,
        Record::Rule(r) => nsdb.get_record(Kind::Chain, r.chain_id).await?,
        other => return Ok(other.tenant_id()),
    };
    Ok(parent.and_then(|p| p.tenant_id()))
}

/// The NSDB kind of a port's device.
pub fn device_kind(device_type: nsdb::DeviceType) -> Kind {
    match device_type {
        nsdb::DeviceType::Bridge => Kind::Bridge,
        nsdb::DeviceType::Router => Kind::Router,
    }
}

/// What a caller may see in a listing, computed once per request.
pub struct Visibility {
    caller: Caller,
    owned_parents: HashSet<Uuid>,
}

impl Visibility {
    /// Loads what the caller owns (its routers, bridges and chains).
    pub async fn of(nsdb: &Nsdb, caller: Caller) -> Result<Visibility, Problem> {
        let mut owned_parents = HashSet::new();
        if let Caller::Tenant(tenant) = caller {
            owned_parents.extend(
                nsdb.list::<Router>()
                    .await?
                    .into_iter()
                    .filter(|r| r.tenant_id == tenant)
                    .map(|r| r.id),
            );
            owned_parents.extend(
                nsdb.list::<Bridge>()
                    .await?
                    .into_iter()
                    .filter(|b| b.tenant_id == tenant)
                    .map(|b| b.id),
            );
            owned_parents.extend(
                nsdb.list::<Chain>()
                    .await?
                    .into_iter()
                    .filter(|c| c.tenant_id == tenant)
                    .map(|c| c.id),
            );
        }
        Ok(Visibility {
            caller,
            owned_parents,
        })
    }

    /// Whether the caller may see `record`.
    pub fn sees(&self, record: &Record) -> bool {
        match self.caller {
            Caller::Admin => true,
            Caller::Tenant(tenant) => match record {
                Record::Tenant(t) => t.id == tenant,
                Record::Port(_) | Record::Route(_) | Record::Rule(_) => record
                    .parent_id()
                    .is_some_and(|p| self.owned_parents.contains(&p)),
                other => other.tenant_id() == Some(tenant),
            },
        }
    }
}

/// Parses an id from the path, as a 404 when it is not a UUID.
pub fn parse_id(kind: &str, raw: &str) -> Result<Uuid, Problem> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(format!("{kind} '{raw}'")))
}

/// Reads a record the caller may see, or answers 404 (also for objects of
/// other tenants, so that their existence does not leak).
pub async fn fetch_visible<R: ApiResource>(
    nsdb: &Nsdb,
    caller: Caller,
    id: Uuid,
) -> Result<R, Problem> {
    if R::ADMIN_ONLY {
        caller.require_admin()?;
    }
    let not_found = || Problem::not_found(format!("{} {id}", R::KIND));
    let record = nsdb.get::<R>(id).await?.ok_or_else(not_found)?;
    let owner = owner_tenant(nsdb, &record.clone().into_record()).await?;
    if caller.can_see(owner) {
        Ok(record)
    } else {
        Err(not_found())
    }
}

/// A 200/201 response carrying an object and its revision as the ETag.
pub fn object_response<R: ApiResource>(status: StatusCode, record: &R) -> Response {
    let mut response = (status, axum::Json(record)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", record.revision())) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// The query parameters every listing understands, plus per-collection filters.
pub struct ListQuery {
    limit: usize,
    after: Option<Uuid>,
    filters: Vec<(String, Uuid)>,
}

/// The default and maximum page sizes.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page a client can ask for.
pub const MAX_LIMIT: usize = 1000;

impl ListQuery {
    /// Parses `limit`, `after` and the allowed id filters.
    pub fn parse(params: HashMap<String, String>, filters: &[&str]) -> Result<ListQuery, Problem> {
        let mut query = ListQuery {
            limit: DEFAULT_LIMIT,
            after: None,
            filters: Vec::new(),
        };
        for (name, value) in params {
            let id = || {
                Uuid::parse_str(&value).map_err(|_| {
                    Problem::bad_request(format!("'{value}' is not a UUID"))
                        .with_field(name.clone())
                })
            };
            match name.as_str() {
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            Problem::bad_request(format!("limit must be 1..={MAX_LIMIT}"))
                                .with_field("limit")
                        })?
                }
                "after" => query.after = Some(id()?),
                f if filters.contains(&f) => query.filters.push((name.clone(), id()?)),
                other => {
                    let allowed = ["limit", "after"]
                        .iter()
                        .chain(filters)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter '{other}' (allowed: {allowed})"
                    ))
                    .with_field(other.to_string()));
                }
            }
        }
        Ok(query)
    }

    /// The id a filter of the query asks for, if it has one.
    pub fn filter(&self, name: &str) -> Option<Uuid> {
        self.filters
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, id)| *id)
    }

    /// Paginates an already ordered, already authorized list.
    pub fn paginate<R: Resource>(&self, ordered: Vec<R>) -> Page<R> {
        let start = match self.after {
            Some(after) => ordered
                .iter()
                .position(|r| r.id() == after)
                .map_or(ordered.len(), |i| i + 1),
            None => 0,
        };
        let mut items: Vec<R> = ordered
            .into_iter()
            .skip(start)
            .take(self.limit + 1)
            .collect();
        let next_after = if items.len() > self.limit {
            items.truncate(self.limit);
            items.last().map(Resource::id)
        } else {
            None
        };
        Page { items, next_after }
    }

    /// Adds a filter fixed by the path (e.g. the device of `/v1/bridges/{id}/ports`).
    pub fn with_filter(mut self, name: &str, id: Uuid) -> ListQuery {
        self.filters.push((name.to_string(), id));
        self
    }
}

fn field_uuid(value: &Value, field: &str) -> Option<Uuid> {
    value
        .get(field)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Lists the records of `R` the caller may see, filtered and paginated.
pub async fn list_page<R: ApiResource>(
    nsdb: &Nsdb,
    caller: Caller,
    query: ListQuery,
) -> Result<Page<R>, Problem> {
    if R::ADMIN_ONLY {
        caller.require_admin()?;
    }
    let visibility = Visibility::of(nsdb, caller).await?;
    let mut items = Vec::new();
    let mut next_after = None;
    for record in nsdb.list::<R>().await? {
        if query.after.is_some_and(|after| record.id() <= after) {
            continue;
        }
        if !visibility.sees(&record.clone().into_record()) {
            continue;
        }
        let value = serde_json::to_value(&record).unwrap_or(Value::Null);
        if !query
            .filters
            .iter()
            .all(|(field, id)| field_uuid(&value, field) == Some(*id))
        {
            continue;
        }
        if items.len() == query.limit {
            next_after = items.last().map(|r: &R| r.id());
            break;
        }
        items.push(record);
    }
    Ok(Page { items, next_after })
}

/// Completes a create body: a fresh id unless one is given.
pub fn with_new_id(mut body: Map<String, Value>) -> Map<String, Value> {
    body.entry("id")
        .or_insert_with(|| Value::String(Uuid::new_v4().to_string()));
    body.remove("revision");
    body
}

/// Sets a field fixed by the request path; a body that says otherwise is a 400.
pub fn set_from_path(
    body: &mut Map<String, Value>,
    field: &str,
    value: Value,
) -> Result<(), Problem> {
    match body.get(field) {
        Some(given) if *given != value => Err(Problem::bad_request(format!(
            "{field} is given by the URL ({value}); the body says {given}"
        ))
        .with_field(field)),
        _ => {
            body.insert(field.to_string(), value);
            Ok(())
        }
    }
}

/// Creates a record for the caller: that it belongs to the caller's tenant
/// and references only the tenant's objects is checked inside the NSDB
/// transaction (see [`nsdb::Scope`]).
pub async fn create_checked<R: ApiResource>(
    nsdb: &Nsdb,
    caller: Caller,
    body: Map<String, Value>,
) -> Result<Response, Problem> {
    if R::ADMIN_ONLY {
        caller.require_admin()?;
    }
    let record: R = from_json(Value::Object(body))?;
    let created = nsdb.scoped(caller.scope()).create(record).await?;
    Ok(object_response(StatusCode::CREATED, &created))
}

/// Applies a JSON merge patch of top-level fields to `current`.
pub fn merge_patch<R: ApiResource>(current: &R, patch: Map<String, Value>) -> Result<R, Problem> {
    let mut value =
        serde_json::to_value(current).map_err(|e| Problem::bad_request(e.to_string()))?;
    let Value::Object(object) = &mut value else {
        return Err(Problem::bad_request("object is not a JSON object"));
    };
    for (field, new) in patch {
        if field == "id" || field == "revision" {
            return Err(Problem::bad_request(format!("{field} is read-only")).with_field(field));
        }
        if let Some((_, why)) = R::FIXED
            .iter()
            .chain([TENANT_FIXED].iter())
            .find(|(f, _)| *f == field)
        {
            if object.get(&field) != Some(&new) {
                return Err(
                    Problem::bad_request(format!("{field} cannot be changed: {why}"))
                        .with_field(field),
                );
            }
        }
        object.insert(field, new);
    }
    from_json(value)
}

/// Maps a CAS failure without `If-Match` to 409 (the object changed while
/// the server was applying the patch), keeping 412 for stale `If-Match`.
pub(crate) fn conflict_status(if_match: &IfMatch, error: NsdbError) -> Problem {
    let problem = Problem::from(error);
    if if_match.0.is_none() && problem.status == 412 {
        Problem {
            status: 409,
            ..problem
        }
    } else {
        problem
    }
}

/// `GET /v1/{collection}/{id}`.
pub async fn get_one<R: ApiResource>(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let record: R = fetch_visible(&state.nsdb, caller, parse_id(R::KIND.as_str(), &id)?).await?;
    Ok(object_response(StatusCode::OK, &record))
}

/// `GET /v1/{collection}`.
pub async fn list_all<R: ApiResource>(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Result<axum::Json<Page<R>>, Problem> {
    let filters: &[&str] = match R::KIND {
        Kind::Port => &["device_id", "host_id", "peer_id"],
        Kind::Route => &["router_id"],
        Kind::Rule => &["chain_id"],
        Kind::LoadBalancer => &["tenant_id", "router_id"],
        Kind::Pool | Kind::Vip => &["tenant_id", "load_balancer_id"],
        Kind::PoolMember | Kind::HealthMonitor => &["tenant_id", "pool_id"],
        Kind::Tenant | Kind::Host => &[],
        _ => &["tenant_id"],
    };
    let query = ListQuery::parse(params, filters)?;
    Ok(axum::Json(list_page(&state.nsdb, caller, query).await?))
}

/// `POST /v1/{collection}` for tenant-owned top-level objects: a tenant
/// token's `tenant_id` defaults to its own tenant.
pub async fn create_top<R: ApiResource>(
    State(state): State<AppState>,
    caller: Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, Problem> {
    let mut body = with_new_id(body);
    if let (Caller::Tenant(tenant), false) = (caller, body.contains_key("tenant_id")) {
        if R::KIND != Kind::Tenant && R::KIND != Kind::Host {
            body.insert("tenant_id".into(), Value::String(tenant.to_string()));
        }
    }
    create_checked::<R>(&state.nsdb, caller, body).await
}

/// `PATCH /v1/{collection}/{id}`.
pub async fn patch_one<R: ApiResource>(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    JsonObject(patch): JsonObject,
) -> Result<Response, Problem> {
    let current: R = fetch_visible(&state.nsdb, caller, parse_id(R::KIND.as_str(), &id)?).await?;
    let expected = if_match.0.unwrap_or(current.revision());
    let updated = merge_patch(&current, patch)?;
    let stored = state
        .nsdb
        .scoped(caller.scope())
        .update(updated, Some(expected))
        .await
        .map_err(|e| conflict_status(&if_match, e))?;
    Ok(object_response(StatusCode::OK, &stored))
}

/// `DELETE /v1/{collection}/{id}`.
pub async fn delete_one<R: ApiResource>(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
) -> Result<StatusCode, Problem> {
    let current: R = fetch_visible(&state.nsdb, caller, parse_id(R::KIND.as_str(), &id)?).await?;
    state
        .nsdb
        .scoped(caller.scope())
        .delete::<R>(current.id(), if_match.0)
        .await
        .map_err(|e| conflict_status(&if_match, e))?;
    Ok(StatusCode::NO_CONTENT)
}
