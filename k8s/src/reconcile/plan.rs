//! From what is to what should be, in transactions. A policy's change
//! fits one batch unless it is large; then it goes in three steps that
//! keep the policy whole at every moment: its new generation's objects
//! are created unreferenced, its hook rules (the only records that make a
//! policy apply) switch in one batch, and the old generation is removed.

use std::collections::{BTreeMap, BTreeSet};

use nsdb::{Kind, Record};
use uuid::Uuid;

use api::routes::batch::{BatchOperation, MAX_OPERATIONS};

use super::records::{content, delete, put};

/// The changes that turn `actual` into `desired` (both by id).
#[derive(Debug, Default)]
pub(crate) struct Diff {
    /// Records to create.
    pub creates: Vec<Record>,
    /// Records to replace.
    pub updates: Vec<Record>,
    /// Records to remove.
    pub deletes: Vec<Record>,
}

impl Diff {
    /// Compares.
    pub fn between(actual: &BTreeMap<Uuid, Record>, desired: &BTreeMap<Uuid, Record>) -> Diff {
        let mut diff = Diff::default();
        for (id, want) in desired {
            match actual.get(id) {
                None => diff.creates.push(want.clone()),
                Some(have) if content(have) != content(want) => diff.updates.push(want.clone()),
                Some(_) => {}
            }
        }
        diff.deletes = actual
            .iter()
            .filter(|(id, _)| !desired.contains_key(id))
            .map(|(_, r)| r.clone())
            .collect();
        diff
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }

    /// How many records change.
    pub fn len(&self) -> usize {
        self.creates.len() + self.updates.len() + self.deletes.len()
    }
}

/// Referenced before referencing: groups, chains, rules.
fn creation_rank(record: &Record) -> u8 {
    match record.kind() {
        Kind::PortGroup | Kind::IpAddressGroup | Kind::LoadBalancer => 0,
        Kind::Chain | Kind::Pool => 1,
        _ => 2,
    }
}

fn chunks(operations: Vec<BatchOperation>) -> Vec<Vec<BatchOperation>> {
    operations
        .chunks(MAX_OPERATIONS)
        .map(<[BatchOperation]>::to_vec)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The batches that apply `diff`, in order; `hooks` are the chains whose
/// rules make a policy apply (the cluster's allow and isolation chains).
pub(crate) fn batches(diff: Diff, hooks: &BTreeSet<Uuid>) -> Vec<Vec<BatchOperation>> {
    if diff.is_empty() {
        return Vec::new();
    }
    if diff.len() <= MAX_OPERATIONS {
        let mut one: Vec<BatchOperation> = diff.creates.iter().map(put).collect();
        one.extend(diff.updates.iter().map(put));
        one.extend(diff.deletes.iter().map(delete));
        return vec![one];
    }
    let is_hook = |r: &Record| matches!(r, Record::Rule(rule) if hooks.contains(&rule.chain_id));
    let (mut new, new_hooks): (Vec<Record>, Vec<Record>) =
        diff.creates.into_iter().partition(|r| !is_hook(r));
    let (mut old, old_hooks): (Vec<Record>, Vec<Record>) =
        diff.deletes.into_iter().partition(|r| !is_hook(r));
    new.sort_by_key(creation_rank);
    old.sort_by_key(|r| std::cmp::Reverse(creation_rank(r)));
    let mut switch: Vec<BatchOperation> = new_hooks.iter().map(put).collect();
    switch.extend(diff.updates.iter().map(put));
    switch.extend(old_hooks.iter().map(delete));
    let mut all = chunks(new.iter().map(put).collect());
    all.extend(chunks(switch));
    all.extend(chunks(old.iter().map(delete).collect()));
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsdb::{Chain, Rule, RuleAction};

    fn chain(n: u128) -> Record {
        Record::Chain(Chain {
            id: Uuid::from_u128(n),
            revision: 7,
            tenant_id: Uuid::nil(),
            name: format!("k8s c{n}"),
        })
    }

    fn rule(chain: u128, position: u32) -> Record {
        let mut rule = Rule::new(Uuid::from_u128(chain), position, RuleAction::Accept);
        rule.id = Uuid::from_u128(chain * 1000 + u128::from(position));
        Record::Rule(rule)
    }

    fn by_id(records: Vec<Record>) -> BTreeMap<Uuid, Record> {
        records.into_iter().map(|r| (r.id(), r)).collect()
    }

    #[test]
    fn revisions_do_not_make_a_difference() {
        let actual = by_id(vec![chain(1)]);
        let mut desired = chain(1);
        desired.set_revision(0);
        assert!(Diff::between(&actual, &by_id(vec![desired])).is_empty());
    }

    #[test]
    fn a_small_change_is_one_batch() {
        let actual = by_id(vec![chain(1), rule(1, 1)]);
        let desired = by_id(vec![chain(2), rule(2, 1)]);
        let batches = batches(Diff::between(&actual, &desired), &BTreeSet::new());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 4);
    }

    #[test]
    fn a_large_change_switches_its_hooks_in_one_batch_between_build_and_cleanup() {
        let hook_chain = 9;
        let mut actual = vec![chain(1), rule(hook_chain, 5)];
        actual.extend((1..=30).map(|p| rule(1, p)));
        let mut desired = vec![chain(2)];
        desired.extend((1..=30).map(|p| rule(2, p)));
        let mut hook = rule(hook_chain, 5);
        if let Record::Rule(r) = &mut hook {
            r.action = RuleAction::Jump;
            r.jump_chain_id = Some(Uuid::from_u128(2));
        }
        desired.push(hook);
        let hooks = BTreeSet::from([Uuid::from_u128(hook_chain)]);
        let batches = batches(Diff::between(&by_id(actual), &by_id(desired)), &hooks);
        // Build (31 creates: 2 batches), switch (1 update), clean up (31).
        assert_eq!(batches.len(), 5);
        assert!(
            matches!(&batches[0][0], BatchOperation::Put { collection, .. } if collection == "chains")
        );
        assert_eq!(batches[2].len(), 1, "the switch alone: {:?}", batches[2]);
        assert!(
            matches!(&batches[2][0], BatchOperation::Put { collection, .. } if collection == "rules")
        );
        let last = batches.last().unwrap();
        assert!(
            matches!(last.last().unwrap(), BatchOperation::Delete { collection, .. } if collection == "chains")
        );
    }
}
