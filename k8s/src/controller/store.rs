//! What the controller knows of the cluster: one store per kind, filled
//! by that kind's watch, and read whole into [`Objects`] for a reconcile.
//!
//! A (re)list replaces a kind's store at once when it completes, so an
//! object deleted while the watch was down is gone after the relist, and a
//! half-done relist never shows.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::objects::{BadObject, Objects};

/// The kinds the controller follows, in the order their stores are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `v1` Namespace.
    Namespace,
    /// `v1` Pod.
    Pod,
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// `v1` Service.
    Service,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::Namespace,
        Kind::Pod,
        Kind::NetworkPolicy,
        Kind::Service,
        Kind::EndpointSlice,
    ];
}

/// An object's identity within its kind: namespace (empty for
/// cluster-scoped kinds) and name.
pub type Key = (String, String);

/// One step of a kind's watch, its objects already in JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A (re)list starts.
    Init,
    /// An object of the (re)list.
    InitApply(Key, Value),
    /// The (re)list is complete: it is now the whole kind.
    InitDone,
    /// An object was added or modified.
    Apply(Key, Value),
    /// An object was deleted.
    Delete(Key),
}

/// What an update did to the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing the reconcile would see (a list in progress, an unchanged
    /// object).
    None,
    /// An object changed.
    Changed,
    /// A kind was listed afresh.
    Relisted,
}

#[derive(Debug, Default)]
struct Store {
    objects: BTreeMap<Key, Value>,
    /// A list in progress.
    listing: Option<BTreeMap<Key, Value>>,
    listed: bool,
}

/// The stores of every kind.
#[derive(Debug, Default)]
pub struct Stores {
    stores: BTreeMap<Kind, Store>,
}

impl Stores {
    /// Applies one update of `kind`'s watch.
    pub fn apply(&mut self, kind: Kind, update: Update) -> Effect {
        let store = self.stores.entry(kind).or_default();
        match update {
            Update::Init => {
                store.listing = Some(BTreeMap::new());
                Effect::None
            }
            Update::InitApply(key, object) => {
                store
                    .listing
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key, object);
                Effect::None
            }
            Update::InitDone => {
                store.objects = store.listing.take().unwrap_or_default();
                store.listed = true;
                Effect::Relisted
            }
            Update::Apply(key, object) => {
                if store.objects.get(&key) == Some(&object) {
                    return Effect::None;
                }
                store.objects.insert(key, object);
                Effect::Changed
            }
            Update::Delete(key) => match store.objects.remove(&key) {
                Some(_) => Effect::Changed,
                None => Effect::None,
            },
        }
    }

    /// Whether every kind has been listed at least once: before that, a
    /// reconcile would remove what it has not seen yet.
    pub fn ready(&self) -> bool {
        Kind::ALL
            .iter()
            .all(|kind| self.stores.get(kind).is_some_and(|s| s.listed))
    }

    /// The kinds not listed yet.
    pub fn unlisted(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|kind| !self.stores.get(kind).is_some_and(|s| s.listed))
            .collect()
    }

    /// The whole cluster as the reconcile sees it, and the objects that
    /// could not be read (left out).
    pub fn objects(&self) -> (Objects, Vec<BadObject>) {
        let mut objects = Objects::default();
        let mut bad = Vec::new();
        for store in self.stores.values() {
            for object in store.objects.values() {
                if let Err(error) = objects.add(object.clone()) {
                    bad.push(error);
                }
            }
        }
        (objects, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str) -> (Key, Value) {
        let object = json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "x"},
            "spec": {"podSelector": {}},
        });
        (("x".into(), name.into()), object)
    }

    fn policy_names(stores: &Stores) -> Vec<String> {
        let (objects, bad) = stores.objects();
        assert!(bad.is_empty(), "{bad:?}");
        objects
            .policies
            .iter()
            .map(|p| p.metadata.name.clone())
            .collect()
    }

    fn list_all_empty(stores: &mut Stores) {
        for kind in Kind::ALL {
            stores.apply(kind, Update::Init);
            stores.apply(kind, Update::InitDone);
        }
    }

    #[test]
    fn ready_once_every_kind_is_listed() {
        let mut stores = Stores::default();
        for kind in Kind::ALL {
            assert!(!stores.ready());
            assert!(stores.unlisted().contains(&kind));
            stores.apply(kind, Update::Init);
            assert!(!stores.ready() || kind != Kind::EndpointSlice);
            assert_eq!(stores.apply(kind, Update::InitDone), Effect::Relisted);
        }
        assert!(stores.ready());
        assert!(stores.unlisted().is_empty());
    }

    #[test]
    fn a_relist_replaces_the_kind_when_it_completes() {
        let mut stores = Stores::default();
        list_all_empty(&mut stores);
        let (a, b, c) = (policy("a"), policy("b"), policy("c"));
        stores.apply(Kind::NetworkPolicy, Update::Apply(a.0.clone(), a.1));
        stores.apply(Kind::NetworkPolicy, Update::Apply(b.0.clone(), b.1.clone()));
        assert_eq!(policy_names(&stores), ["a", "b"]);

        // A relist after a 410: `a` was deleted meanwhile, `c` added.
        stores.apply(Kind::NetworkPolicy, Update::Init);
        stores.apply(Kind::NetworkPolicy, Update::InitApply(b.0, b.1));
        // Half a relist is not the state.
        assert_eq!(policy_names(&stores), ["a", "b"]);
        stores.apply(Kind::NetworkPolicy, Update::InitApply(c.0, c.1));
        assert_eq!(
            stores.apply(Kind::NetworkPolicy, Update::InitDone),
            Effect::Relisted
        );
        assert_eq!(policy_names(&stores), ["b", "c"]);
    }

    #[test]
    fn only_real_changes_count() {
        let mut stores = Stores::default();
        list_all_empty(&mut stores);
        let (key, object) = policy("a");
        let apply = Update::Apply(key.clone(), object);
        assert_eq!(
            stores.apply(Kind::NetworkPolicy, apply.clone()),
            Effect::Changed
        );
        assert_eq!(stores.apply(Kind::NetworkPolicy, apply), Effect::None);
        let delete = Update::Delete(key);
        assert_eq!(
            stores.apply(Kind::NetworkPolicy, delete.clone()),
            Effect::Changed
        );
        assert_eq!(stores.apply(Kind::NetworkPolicy, delete), Effect::None);
    }

    #[test]
    fn a_bad_object_is_left_out_and_named() {
        let mut stores = Stores::default();
        list_all_empty(&mut stores);
        let bad = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": 3}});
        stores.apply(Kind::Pod, Update::Apply(("x".into(), "p".into()), bad));
        let (good, _) = policy("a");
        stores.apply(Kind::NetworkPolicy, Update::Apply(good, policy("a").1));
        let (objects, bad) = stores.objects();
        assert!(objects.pods.is_empty());
        assert_eq!(objects.policies.len(), 1);
        assert_eq!(bad[0].what, "Pod p");
    }
}
