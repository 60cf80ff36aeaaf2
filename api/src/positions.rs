//! Rule positions: inserting or moving a rule shifts the rules in its way,
//! in the same transaction as the insert or move.

use nsdb::{Mutation, Record, Rule};
use uuid::Uuid;

/// The chain has a rule at the highest position: nothing can go after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// The position after the chain's last rule (1 for an empty chain).
pub fn next_position(existing: &[Rule]) -> Result<u32, NoRoom> {
    match existing.iter().map(|r| r.position).max() {
        Some(last) => last.checked_add(1).ok_or(NoRoom),
        None => Ok(1),
    }
}

/// Updates that move the run of rules starting at `position` down by one,
/// so that `position` becomes free. `except` is left out (a rule that is
/// itself moving). Rules after a gap stay where they are.
fn open_slot(
    existing: &[Rule],
    position: u32,
    except: Option<Uuid>,
) -> Result<Vec<Mutation>, NoRoom> {
    let mut batch = Vec::new();
    let mut at = position;
    loop {
        let Some(occupant) = existing
            .iter()
            .find(|r| r.position == at && Some(r.id) != except)
        else {
            return Ok(batch);
        };
        let mut shifted = occupant.clone();
        shifted.position = at.checked_add(1).ok_or(NoRoom)?;
        batch.push(Mutation::Update {
            record: Record::Rule(shifted),
            expected_revision: Some(occupant.revision),
        });
        at += 1;
    }
}

/// The batch that inserts `rule` at its position into a chain holding
/// `existing`, shifting the rules in the way.
pub fn insert(existing: &[Rule], rule: Rule) -> Result<Vec<Mutation>, NoRoom> {
    let mut batch = open_slot(existing, rule.position, None)?;
    batch.push(Mutation::Create(Record::Rule(rule)));
    Ok(batch)
}

/// Updates that move the run of rules ending at `position` up by one
/// (toward the chain's start), into a gap or the slot `mover` leaves, so
/// that a rule moving down lands after the rules it passes.
fn close_behind(existing: &[Rule], position: u32, mover: &Rule) -> Vec<Mutation> {
    let mut batch = Vec::new();
    let mut at = position;
    while at > mover.position {
        let Some(occupant) = existing
            .iter()
            .find(|r| r.position == at && r.id != mover.id)
        else {
            break;
        };
        let mut shifted = occupant.clone();
        shifted.position = at - 1;
        batch.push(Mutation::Update {
            record: Record::Rule(shifted),
            expected_revision: Some(occupant.revision),
        });
        at -= 1;
    }
    batch
}

/// The batch that moves `rule` (one of `existing`) to `position`: the rule
/// ends up at `position`, before the rules that were there when moving up
/// and after the rules it passes when moving down.
pub fn move_to(existing: &[Rule], rule: &Rule, position: u32) -> Result<Vec<Mutation>, NoRoom> {
    let mut batch = if position > rule.position {
        close_behind(existing, position, rule)
    } else {
        Vec::new()
    };
    if batch.is_empty() {
        batch = open_slot(existing, position, Some(rule.id))?;
    }
    let mut moved = rule.clone();
    moved.position = position;
    batch.push(Mutation::Update {
        record: Record::Rule(moved),
        expected_revision: Some(rule.revision),
    });
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsdb::RuleAction;

    fn rules(positions: &[u32]) -> Vec<Rule> {
        positions
            .iter()
            .map(|p| Rule::new(Uuid::nil(), *p, RuleAction::Accept))
            .collect()
    }

    fn shifted(batch: &[Mutation]) -> Vec<(u32, u32)> {
        batch
            .iter()
            .filter_map(|m| match m {
                Mutation::Update {
                    record: Record::Rule(r),
                    ..
                } => Some(r.position),
                _ => None,
            })
            .zip(batch.iter())
            .map(|(to, _)| (to - 1, to))
            .collect()
    }

    #[test]
    fn inserting_shifts_only_the_run_in_the_way() {
        let existing = rules(&[1, 2, 3, 10]);
        let batch = insert(&existing, Rule::new(Uuid::nil(), 2, RuleAction::Drop)).unwrap();
        assert_eq!(shifted(&batch), vec![(2, 3), (3, 4)]);
        assert!(matches!(batch.last(), Some(Mutation::Create(_))));
        assert_eq!(next_position(&existing), Ok(11));
        assert_eq!(next_position(&[]), Ok(1));
        assert_eq!(next_position(&rules(&[u32::MAX])), Err(NoRoom));
    }

    #[test]
    fn moving_frees_the_target_and_skips_the_rule_itself() {
        let existing = rules(&[1, 2, 3]);
        let batch = move_to(&existing, &existing[2], 1).unwrap();
        // 1 → 2, 2 → 3 (the mover's old slot is free once it moves).
        assert_eq!(batch.len(), 3);
        let Mutation::Update {
            record: Record::Rule(moved),
            ..
        } = batch.last().unwrap()
        else {
            panic!("the move itself comes last")
        };
        assert_eq!((moved.id, moved.position), (existing[2].id, 1));
    }

    #[test]
    fn moving_down_lands_after_the_rules_passed() {
        let existing = rules(&[1, 2, 3, 5]);
        let batch = move_to(&existing, &existing[0], 3).unwrap();
        let positions: Vec<(Uuid, u32)> = batch
            .iter()
            .filter_map(|m| match m {
                Mutation::Update {
                    record: Record::Rule(r),
                    ..
                } => Some((r.id, r.position)),
                _ => None,
            })
            .collect();
        // 3 → 2, 2 → 1, then the mover takes 3; the rule at 5 stays.
        assert_eq!(positions.len(), 3);
        assert_eq!(positions[2], (existing[0].id, 3));
        assert!(positions.contains(&(existing[1].id, 1)));
        assert!(positions.contains(&(existing[2].id, 2)));
    }
}
