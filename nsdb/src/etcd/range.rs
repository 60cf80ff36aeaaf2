//! Range reads in pages, all at one revision.
//!
//! One etcd response must fit the client's message limit (4 MiB), and a
//! whole NSDB does not: 10,000 bound ports are more. A range is read
//! [`PAGE_KEYS`] keys at a time, each page starting after the last key of
//! the page before, and every page after the first at the first page's
//! header revision, so that the pages together are one snapshot. A page
//! whose response is still too large (large values) is read again with half
//! as many keys, and the pages after it grow back.

use etcd_client as ec;

use super::{
    entry, grpc_code, header_revision, map_err, timed, GRPC_OUT_OF_RANGE, REQUEST_TIMEOUT,
};
use crate::error::StoreError;
use crate::kv::{KvEntry, RangeResult, Revision};

/// Keys asked for per page: typical records are well under 1 KB, so a page
/// is a few hundred KB.
const PAGE_KEYS: i64 = 500;
/// How many times a read starts over when its revision is compacted away
/// between two of its pages.
const RESTARTS: u32 = 3;

/// The first key after every key that starts with `prefix` (etcd's range
/// end of a prefix); `\0` (no end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// The key right after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Why one page could not be read.
enum PageError {
    /// The response exceeds the client's message limit.
    TooLarge(ec::Error),
    /// The snapshot's revision was compacted away after the first page.
    Compacted,
    /// Anything else.
    Failed(StoreError),
}

/// Reads every key under `full_prefix` (prefixed keys), returning them
/// with `strip` removed, sorted by key, at one revision.
pub(super) async fn read(
    client: &ec::Client,
    full_prefix: &str,
    strip: &str,
) -> Result<RangeResult, StoreError> {
    let mut restarts = 0;
    loop {
        match read_once(client, full_prefix, strip).await {
            Err(PageError::Compacted) if restarts < RESTARTS => restarts += 1,
            Err(PageError::Compacted) => {
                let why = "etcd range: the revision read at was compacted away, again and again";
                return Err(StoreError::Unavailable(why.to_string()));
            }
            Err(PageError::TooLarge(e)) => return Err(map_err("range", &e)),
            Err(PageError::Failed(e)) => return Err(e),
            Ok(result) => return Ok(result),
        }
    }
}

/// One attempt at [`read`]: page after page at the first page's revision.
async fn read_once(
    client: &ec::Client,
    full_prefix: &str,
    strip: &str,
) -> Result<RangeResult, PageError> {
    let (mut from, end) = match full_prefix.as_bytes() {
        [] => (vec![0], vec![0]),
        prefix => (prefix.to_vec(), prefix_end(prefix)),
    };
    let mut revision: Revision = 0;
    let mut limit = PAGE_KEYS;
    let mut entries: Vec<KvEntry> = Vec::new();
    loop {
        let mut options = ec::GetOptions::new()
            .with_range(end.clone())
            .with_limit(limit);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut kv = client.kv_client();
        let resp = match timed(REQUEST_TIMEOUT, kv.get(from.clone(), Some(options))).await {
            Ok(resp) => resp,
            Err(e) => match classify(e) {
                PageError::TooLarge(_) if limit > 1 => {
                    limit /= 2;
                    continue;
                }
                other => return Err(other),
            },
        };
        if revision == 0 {
            revision = header_revision("range", resp.header()).map_err(PageError::Failed)?;
        }
        for kv in resp.kvs() {
            entries.push(entry(strip, kv).map_err(PageError::Failed)?);
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => from = successor(last.key()),
            _ => break,
        }
        // A few large values need not shrink every later page.
        limit = (limit * 2).min(PAGE_KEYS);
    }
    // etcd answers in key order (bytes); keep the contract's order explicit.
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(RangeResult { entries, revision })
}

/// Sorts a failed page read into what to do about it.
fn classify(e: ec::Error) -> PageError {
    let message = e.to_string();
    match grpc_code(&e) {
        Some(GRPC_OUT_OF_RANGE) if message.contains("message length too large") => {
            PageError::TooLarge(e)
        }
        Some(GRPC_OUT_OF_RANGE) if message.contains("compacted") => PageError::Compacted,
        _ => PageError::Failed(map_err("range", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_etcds() {
        assert_eq!(prefix_end(b"/p/obj/"), b"/p/obj0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(successor(b"/p/a"), b"/p/a\0");
    }
}
