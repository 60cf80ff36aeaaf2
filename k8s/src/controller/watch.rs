//! One watch per kind, cluster-wide: kube's watcher (LIST, then WATCH from
//! the list's resourceVersion, re-WATCH from the last one seen when the
//! stream breaks), its objects turned into JSON [`Update`]s for the stores.
//!
//! The one thing added to kube's watcher: a 410 Gone in any shape starts
//! over with a fresh LIST. kube relists on a watch's `ERROR` event with
//! code 410, but a 410 *status* answering the WATCH request itself comes
//! out of it as a stream error, after which it would re-WATCH from the same
//! too-old resourceVersion forever.

use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::store::{Key, Kind, Update};

/// How long a failing watch waits before its next attempt: from `min`,
/// doubled each failure, at most `max`, back to `min` once events flow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

/// Starts the watch of every kind on `tasks`, each sending its updates to
/// `updates`. A task ends only when `updates` is closed.
pub(super) fn spawn_all(
    client: &Client,
    backoff: Backoff,
    updates: &mpsc::Sender<(Kind, Update)>,
    tasks: &mut JoinSet<Kind>,
) {
    for kind in Kind::ALL {
        let (client, updates) = (client.clone(), updates.clone());
        match kind {
            Kind::Namespace => tasks.spawn(follow::<Namespace>(client, kind, backoff, updates)),
            Kind::Pod => tasks.spawn(follow::<Pod>(client, kind, backoff, updates)),
            Kind::NetworkPolicy => {
                tasks.spawn(follow::<NetworkPolicy>(client, kind, backoff, updates))
            }
            Kind::Service => tasks.spawn(follow::<Service>(client, kind, backoff, updates)),
            Kind::EndpointSlice => {
                tasks.spawn(follow::<EndpointSlice>(client, kind, backoff, updates))
            }
        };
    }
}

/// Follows one kind until `updates` is closed; returns the kind.
async fn follow<K>(
    client: Client,
    kind: Kind,
    backoff: Backoff,
    updates: mpsc::Sender<(Kind, Update)>,
) -> Kind
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + 'static,
{
    let api = Api::<K>::all(client);
    let mut delay = backoff.min;
    loop {
        // A new watcher starts with a LIST.
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    delay = backoff.min;
                    let Some(update) = update(kind, event) else {
                        continue;
                    };
                    if updates.send((kind, update)).await.is_err() {
                        return kind;
                    }
                }
                Err(error) => {
                    let gone = is_gone(&error);
                    tracing::warn!(
                        ?kind,
                        %error,
                        retry_in = ?delay,
                        "watch failed; {}",
                        if gone { "listing afresh" } else { "resuming" }
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(backoff.max);
                    if gone {
                        break;
                    }
                }
            }
        }
    }
}

/// Whether the API server said 410 Gone: the resourceVersion we resume
/// from is older than what it keeps, so only a LIST can catch up.
fn is_gone(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => {
            matches!(error, kube::Error::Api(status) if status.code == 410)
        }
        watcher::Error::NoResourceVersion => false,
    }
}

/// The store update for a watcher event, objects in the API server's JSON
/// shape (managed fields dropped: they are large and mean nothing here).
fn update<K: Resource + Serialize>(kind: Kind, event: Event<K>) -> Option<Update> {
    let event = event.modify(|object| object.meta_mut().managed_fields = None);
    Some(match event {
        Event::Init => Update::Init,
        Event::InitDone => Update::InitDone,
        Event::InitApply(object) => {
            let (key, value) = json(kind, &object)?;
            Update::InitApply(key, value)
        }
        Event::Apply(object) => {
            let (key, value) = json(kind, &object)?;
            Update::Apply(key, value)
        }
        Event::Delete(object) => Update::Delete(key(&object)),
    })
}

fn key<K: Resource>(object: &K) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn json<K: Resource + Serialize>(kind: Kind, object: &K) -> Option<(Key, serde_json::Value)> {
    match serde_json::to_value(object) {
        Ok(value) => Some((key(object), value)),
        Err(error) => {
            tracing::warn!(?kind, name = %object.name_any(), %error, "cannot serialize; left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::ErrorResponse;

    fn status(code: u16) -> ErrorResponse {
        ErrorResponse {
            status: "Failure".into(),
            message: "too old resource version".into(),
            reason: "Expired".into(),
            code,
        }
    }

    #[test]
    fn gone_in_every_shape() {
        assert!(is_gone(&watcher::Error::WatchError(status(410))));
        assert!(is_gone(&watcher::Error::WatchFailed(kube::Error::Api(
            status(410)
        ))));
        assert!(is_gone(&watcher::Error::WatchStartFailed(
            kube::Error::Api(status(410))
        )));
        assert!(!is_gone(&watcher::Error::WatchError(status(500))));
        assert!(!is_gone(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn objects_keep_their_kind_in_json() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("a".into());
        pod.metadata.namespace = Some("x".into());
        pod.metadata.managed_fields = Some(vec![Default::default()]);
        let Some(Update::Apply(key, value)) = update(Kind::Pod, Event::Apply(pod)) else {
            panic!("not an apply");
        };
        assert_eq!(key, ("x".to_string(), "a".to_string()));
        assert_eq!(value["kind"], "Pod");
        assert_eq!(value["apiVersion"], "v1");
        assert!(value["metadata"].get("managedFields").is_none());
        let mut objects = crate::objects::Objects::default();
        assert!(objects.add(value).unwrap());
        assert_eq!(objects.pods[0].metadata.name, "a");
    }
}
