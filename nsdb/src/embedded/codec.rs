//! The embedded store's on-disk encoding: a key's value with its revision
//! metadata, and the events of one revision in the change log.

use crate::error::StoreError;
use crate::kv::{KvEvent, KvEventKind, LeaseId, Revision};

/// A stored value with its metadata, as laid out in the `kv` table.
pub(super) struct Stored {
    pub(super) create_revision: Revision,
    pub(super) mod_revision: Revision,
    pub(super) lease: LeaseId,
    pub(super) value: Vec<u8>,
}

impl Stored {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.value.len());
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.mod_revision.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub(super) fn decode(key: &str, bytes: &[u8]) -> Result<Stored, StoreError> {
        let field = |i: usize| -> Result<i64, StoreError> {
            let raw = bytes
                .get(i * 8..i * 8 + 8)
                .ok_or_else(|| StoreError::Corrupt {
                    key: key.to_string(),
                    reason: "truncated metadata".into(),
                })?;
            let mut buf = [0u8; 8];
            buf.copy_from_slice(raw);
            Ok(i64::from_be_bytes(buf))
        };
        Ok(Stored {
            create_revision: field(0)?,
            mod_revision: field(1)?,
            lease: field(2)?,
            value: bytes[24..].to_vec(),
        })
    }
}

pub(super) fn encode_events(events: &[KvEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        out.push(matches!(e.kind, KvEventKind::Delete) as u8);
        out.extend_from_slice(&(e.key.len() as u32).to_be_bytes());
        out.extend_from_slice(e.key.as_bytes());
        out.extend_from_slice(&(e.value.len() as u32).to_be_bytes());
        out.extend_from_slice(&e.value);
    }
    out
}

pub(super) fn decode_events(
    revision: Revision,
    mut bytes: &[u8],
) -> Result<Vec<KvEvent>, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: format!("log/{revision}"),
        reason: "truncated event".into(),
    };
    let take = |n: usize, bytes: &mut &[u8]| -> Result<Vec<u8>, StoreError> {
        if bytes.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = bytes.split_at(n);
        *bytes = tail;
        Ok(head.to_vec())
    };
    let mut events = Vec::new();
    while !bytes.is_empty() {
        let kind = take(1, &mut bytes)?[0];
        let len = |b: Vec<u8>| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let key_len = len(take(4, &mut bytes)?);
        let key = String::from_utf8(take(key_len, &mut bytes)?).map_err(|_| corrupt())?;
        let value_len = len(take(4, &mut bytes)?);
        let value = take(value_len, &mut bytes)?;
        let kind = if kind == 1 {
            KvEventKind::Delete
        } else {
            KvEventKind::Put
        };
        events.push(KvEvent {
            kind,
            key,
            value,
            revision,
        });
    }
    Ok(events)
}
