//! Chain rules: jumps must never form a loop.

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

use super::{invalid, read};
use crate::error::NsdbError;
use crate::keys;
use crate::model::{Kind, Record, Rule};
use crate::txn::Tx;

/// The chains `chain`'s rules jump to, as this transaction sees them.
async fn jump_targets(tx: &mut Tx, chain: Uuid) -> Result<Vec<Uuid>, NsdbError> {
    let mut targets = Vec::new();
    for (key, _) in tx.range(&keys::references_to_of(chain, Kind::Rule)).await? {
        let Some((_, rule_id)) = keys::parse_reference(&key) else {
            continue;
        };
        if let Some(Record::Rule(rule)) = read(tx, Kind::Rule, rule_id).await? {
            if rule.chain_id == chain {
                targets.extend(rule.jump_chain_id);
            }
        }
    }
    Ok(targets)
}

async fn chain_label(tx: &mut Tx, id: Uuid) -> Result<String, NsdbError> {
    Ok(match read(tx, Kind::Chain, id).await? {
        Some(Record::Chain(chain)) => format!("{} ({id})", chain.name),
        _ => id.to_string(),
    })
}

/// Refuses a jump that would let evaluation come back to the rule's own
/// chain, naming the cycle. Every chain visited is read through the
/// transaction, so a concurrent jump elsewhere that closes the loop makes
/// one of the two commits fail and re-check.
pub(super) async fn check_jump_loop(tx: &mut Tx, rule: &Rule) -> Result<(), NsdbError> {
    let Some(target) = rule.jump_chain_id else {
        return Ok(());
    };
    let mut came_from: HashMap<Uuid, Uuid> = HashMap::new();
    let mut seen = HashSet::from([target]);
    let mut queue = VecDeque::from([target]);
    while let Some(chain) = queue.pop_front() {
        if chain == rule.chain_id {
            let mut path = vec![chain];
            let mut at = chain;
            while at != target {
                at = came_from[&at];
                path.push(at);
            }
            path.push(rule.chain_id);
            path.reverse();
            let mut labels = Vec::with_capacity(path.len());
            for id in path {
                labels.push(chain_label(tx, id).await?);
            }
            return Err(invalid(
                Kind::Rule,
                rule.id,
                "jump_chain_id",
                format!("the jump would loop: {}", labels.join(" → ")),
            ));
        }
        for next in jump_targets(tx, chain).await? {
            if seen.insert(next) {
                came_from.insert(next, chain);
                queue.push_back(next);
            }
        }
    }
    Ok(())
}
