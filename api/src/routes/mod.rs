//! The API's resources, one module per group of collections.

pub mod attachments;
pub mod batch;
pub mod chains;
pub mod counters;
pub mod devices;
pub mod groups;
pub mod infra;
pub mod lb;
pub mod network;
pub mod ports;
pub mod tenants;
pub mod tokens;
pub mod trace;
pub mod trace_requests;

use axum::http::Method;
use axum::routing::{delete, get, patch, MethodRouter};

use crate::openapi::{ApiRouter, RouteDoc};
use crate::resource::{delete_one, get_one, patch_one, ApiResource, Page};
use crate::server::AppState;

/// The standard documentation of the five CRUD routes of a collection.
pub struct CrudDocs {
    /// `GET /v1/{collection}`.
    pub list: RouteDoc,
    /// `POST /v1/{collection}`.
    pub create: RouteDoc,
    /// `GET /v1/{collection}/{id}`.
    pub get: RouteDoc,
    /// `PATCH /v1/{collection}/{id}`.
    pub patch: RouteDoc,
    /// `DELETE /v1/{collection}/{id}`.
    pub delete: RouteDoc,
}

/// Documents the CRUD routes of `R` at `collection` and `item` paths.
pub fn crud_docs<R: ApiResource>(
    collection: &'static str,
    item: &'static str,
    tag: &'static str,
    query: &'static [&'static str],
) -> CrudDocs {
    let kind = R::KIND;
    CrudDocs {
        list: RouteDoc::new(Method::GET, collection, tag, format!("List {kind}s"))
            .response::<Page<R>>(200)
            .query(query),
        create: RouteDoc::new(Method::POST, collection, tag, format!("Create a {kind}"))
            .request::<R>()
            .response::<R>(201),
        get: RouteDoc::new(Method::GET, item, tag, format!("Get a {kind}")).response::<R>(200),
        patch: RouteDoc::new(
            Method::PATCH,
            item,
            tag,
            format!("Change fields of a {kind} (If-Match: revision)"),
        )
        .request::<serde_json::Map<String, serde_json::Value>>()
        .response::<R>(200),
        delete: RouteDoc::new(
            Method::DELETE,
            item,
            tag,
            format!("Delete a {kind} (If-Match: revision)"),
        )
        .empty(204),
    }
}

impl CrudDocs {
    /// Registers the five routes: `list` and `create` as given, and the
    /// generic get, patch and delete of `R`.
    pub fn register<R: ApiResource>(
        self,
        api: ApiRouter,
        list: MethodRouter<AppState>,
        create: MethodRouter<AppState>,
    ) -> ApiRouter {
        api.add(self.list, list)
            .add(self.create, create)
            .add(self.get, get(get_one::<R>))
            .add(self.patch, patch(patch_one::<R>))
            .add(self.delete, delete(delete_one::<R>))
    }
}
