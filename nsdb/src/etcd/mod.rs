//! The etcd v3 backend of [`KvBackend`].
//!
//! Every key is stored under the configured prefix, which is added on the way
//! in and stripped on the way out. A range is read in pages at one revision
//! (any size fits); a commit is one etcd `Txn`, which etcd bounds (128
//! operations, 1.5 MiB by default), so callers keep commits small; a watch
//! is one etcd watch that is transparently re-created after disconnects.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;
use tokio::sync::mpsc;

use crate::error::StoreError;

mod config;
mod range;
use crate::kv::{
    CommitOutcome, Compare, KvBackend, KvEntry, KvEvent, KvEventKind, LeaseId, Op, RangeResult,
    Revision, WatchMessage, WatchReceiver,
};
pub use config::{EtcdConfig, DEFAULT_PREFIX};

/// How long one request may go unanswered before it counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// First and longest delay between attempts to re-create a broken watch.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));
/// gRPC status code `NOT_FOUND` (etcd: "requested lease not found").
const GRPC_NOT_FOUND: i32 = 5;
/// gRPC status code `OUT_OF_RANGE` (etcd: compacted or future revision;
/// the client: a response over its message limit).
const GRPC_OUT_OF_RANGE: i32 = 11;
/// The largest watch response the client accepts: any. etcd bounds one
/// revision by its `--max-request-bytes` (1.5 MiB by default) but sends a
/// watch that catches up up to 1,000 revisions in one response; at the
/// client's default 4 MiB such a response fails to decode, and the watch
/// re-opened at the same revision fails again, forever.
const WATCH_MESSAGE_LIMIT: usize = usize::MAX;

/// A [`KvBackend`] stored in etcd under a key prefix.
#[derive(Clone)]
pub struct EtcdBackend {
    client: ec::Client,
    prefix: String,
}

impl EtcdBackend {
    /// Connects to etcd and checks that it answers.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdBackend, StoreError> {
        if config.endpoints.is_empty() {
            return Err(StoreError::Config("no etcd endpoints given".to_string()));
        }
        let mut options = ec::ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            // etcd rejects pings on idle connections, so only ping while streaming.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false);
        if let Some(tls) = config.tls_options()? {
            options = options.with_tls(tls);
        }
        if let Some(user) = &config.user {
            options = options.with_user(user, config.password.clone().unwrap_or_default());
        }
        let at = format!("cannot connect to etcd at {}", config.endpoints.join(","));
        let context = |e: StoreError| match e {
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("{at}: {m}")),
            StoreError::Backend(m) => StoreError::Backend(format!("{at}: {m}")),
            other => other,
        };
        let connect = ec::Client::connect(&config.endpoints, Some(options));
        let client = timed(config.connect_timeout, connect)
            .await
            .map_err(|e| context(map_err("connect", &e)))?;
        let backend = EtcdBackend {
            client,
            prefix: config.prefix,
        };
        backend.current_revision().await.map_err(context)?;
        Ok(backend)
    }

    /// The configured prefix followed by `key`.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Waits at most `limit` for an etcd call; silence becomes a timed-out I/O error.
async fn timed<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, ec::Error>>,
) -> Result<T, ec::Error> {
    use std::io::{Error, ErrorKind::TimedOut};
    let silent = |_| Err(Error::new(TimedOut, format!("no answer within {limit:?}")).into());
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(silent)
}

/// Runs one etcd request with the standard timeout and error mapping.
async fn call<T>(
    op: &str,
    fut: impl Future<Output = Result<T, ec::Error>>,
) -> Result<T, StoreError> {
    timed(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|e| map_err(op, &e))
}

/// The gRPC status code of an etcd error, if it carries one.
fn grpc_code(e: &ec::Error) -> Option<i32> {
    match e {
        ec::Error::GRpcStatus(status) => Some(status.code() as i32),
        _ => None,
    }
}

/// Maps an etcd client error, naming the operation that failed.
fn map_err(op: &str, e: &ec::Error) -> StoreError {
    let message = format!("etcd {op}: {e}");
    match e {
        ec::Error::TransportError(_) | ec::Error::IoError(_) | ec::Error::WatchError(_) => {
            StoreError::Unavailable(message)
        }
        // Cancelled, DeadlineExceeded, Unavailable.
        _ if matches!(grpc_code(e), Some(1 | 4 | 14)) => StoreError::Unavailable(message),
        _ => StoreError::Backend(message),
    }
}

/// Whether a failure to open a watch will not go away by retrying.
fn is_permanent(e: &ec::Error) -> bool {
    // InvalidArgument, PermissionDenied, FailedPrecondition, OutOfRange,
    // Unimplemented, Unauthenticated.
    matches!(e, ec::Error::InvalidArgs(_) | ec::Error::InvalidUri(_))
        || matches!(grpc_code(e), Some(3 | 7 | 9 | 11 | 12 | 16))
}

/// Strips `prefix` from a stored key; keys are expected to be UTF-8.
fn relative_key(prefix: &str, key: &[u8]) -> Result<String, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("{reason} (prefix {prefix})"),
    };
    let key = std::str::from_utf8(key).map_err(|_| corrupt("key is not UTF-8"))?;
    let relative = key
        .strip_prefix(prefix)
        .ok_or_else(|| corrupt("key outside the prefix"))?;
    Ok(relative.to_string())
}

/// Converts a stored key-value pair into a relative entry.
fn entry(prefix: &str, kv: &ec::KeyValue) -> Result<KvEntry, StoreError> {
    Ok(KvEntry {
        key: relative_key(prefix, kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

/// The header revision of a response, or an error naming the operation.
fn header_revision(op: &str, header: Option<&ec::ResponseHeader>) -> Result<Revision, StoreError> {
    let missing = || StoreError::Backend(format!("etcd {op}: response has no header"));
    header.map(ec::ResponseHeader::revision).ok_or_else(missing)
}

#[async_trait]
impl KvBackend for EtcdBackend {
    async fn get(&self, key: &str) -> Result<Option<KvEntry>, StoreError> {
        let mut client = self.client.clone();
        let resp = call("get", client.get(self.full(key), None)).await?;
        resp.kvs()
            .first()
            .map(|kv| entry(&self.prefix, kv))
            .transpose()
    }

    /// Reads in pages at one revision (see [`range`]): one response could
    /// not hold a large NSDB.
    async fn range(&self, prefix: &str) -> Result<RangeResult, StoreError> {
        range::read(&self.client, &self.full(prefix), &self.prefix).await
    }

    /// One etcd `Txn`. etcd rejects a Txn that writes the same key twice
    /// ("duplicate key given in txn request"): callers put each key in `ops`
    /// at most once.
    async fn commit(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<CommitOutcome, StoreError> {
        use ec::CompareOp::{Equal, Less};
        let compares: Vec<ec::Compare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::ModRevisionEquals { key, revision } => {
                    ec::Compare::mod_revision(self.full(&key), Equal, revision)
                }
                // A range compare must hold for every key in the range; an
                // empty range compares like a missing key (mod revision 0).
                Compare::PrefixUnchangedSince { prefix, revision } => {
                    let below = revision.saturating_add(1);
                    ec::Compare::mod_revision(self.full(&prefix), Less, below).with_prefix()
                }
            })
            .collect();
        let mut lease_used = None;
        let ops: Vec<ec::TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    lease_used = lease_used.or(lease);
                    let options = lease.map(|id| ec::PutOptions::new().with_lease(id));
                    ec::TxnOp::put(self.full(&key), value, options)
                }
                Op::Delete { key } => ec::TxnOp::delete(self.full(&key), None),
            })
            .collect();
        let txn = ec::Txn::new().when(compares).and_then(ops);
        let mut client = self.client.clone();
        let result = timed(REQUEST_TIMEOUT, client.txn(txn)).await;
        let resp = match (result, lease_used) {
            // A put attached to an expired lease fails the whole request.
            (Err(e), Some(id)) if grpc_code(&e) == Some(GRPC_NOT_FOUND) => {
                return Err(StoreError::LeaseNotFound(id))
            }
            (result, _) => result.map_err(|e| map_err("commit", &e))?,
        };
        if !resp.succeeded() {
            return Ok(CommitOutcome::CompareFailed);
        }
        Ok(CommitOutcome::Committed(header_revision(
            "commit",
            resp.header(),
        )?))
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchReceiver, StoreError> {
        if from_revision < 0 {
            let why = format!("etcd watch: invalid start revision {from_revision}");
            return Err(StoreError::Backend(why));
        }
        let (tx, rx) = mpsc::channel(1024);
        let watcher = Watcher {
            client: self
                .client
                .watch_client()
                .max_decoding_message_size(WATCH_MESSAGE_LIMIT),
            key: self.full(prefix),
            strip: self.prefix.clone(),
            next: from_revision,
            delivered: from_revision - 1,
            tx,
        };
        tokio::spawn(watcher.run());
        Ok(rx)
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let (mut client, options) = (self.client.clone(), ec::GetOptions::new().with_count_only());
        let resp = call("current_revision", client.get(self.full(""), Some(options))).await?;
        header_revision("current_revision", resp.header())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        if revision <= 0 {
            return Ok(());
        }
        match timed(REQUEST_TIMEOUT, self.client.clone().compact(revision, None)).await {
            Err(e)
                if grpc_code(&e) == Some(GRPC_OUT_OF_RANGE)
                    && e.to_string().contains("has been compacted") =>
            {
                Ok(())
            }
            result => result.map(drop).map_err(|e| map_err("compact", &e)),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX);
        let resp = call("grant_lease", self.client.clone().lease_grant(secs, None)).await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd grant_lease: {}",
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // Sends one keep-alive request and reads its one response; etcd
        // answers TTL 0 for a lease that is gone, which the client reports as
        // a "lease not found" keep-alive error.
        match timed(REQUEST_TIMEOUT, self.client.clone().lease_keep_alive(lease)).await {
            Ok(_) => Ok(()),
            Err(ec::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(e) if grpc_code(&e) == Some(GRPC_NOT_FOUND) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(e) => Err(map_err("keep_alive", &e)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        match timed(REQUEST_TIMEOUT, self.client.clone().lease_revoke(lease)).await {
            Ok(_) => Ok(()),
            Err(e) if grpc_code(&e) == Some(GRPC_NOT_FOUND) => {
                Err(StoreError::LeaseNotFound(lease))
            }
            Err(e) => Err(map_err("revoke_lease", &e)),
        }
    }
}

/// The task behind one [`KvBackend::watch`] call.
struct Watcher {
    /// The backend's watch client (a cheap clone), without a message limit.
    client: ec::WatchClient,
    /// The full (prefixed) key prefix watched.
    key: String,
    /// The backend prefix stripped from event keys.
    strip: String,
    /// The revision to (re-)start watching from (0: from "now").
    next: Revision,
    /// The last revision delivered; older events are never sent again.
    delivered: Revision,
    /// The receiving side of the watch.
    tx: mpsc::Sender<WatchMessage>,
}

/// Why one etcd watch stream ended.
enum End {
    /// The stream broke: re-watch from `next`.
    Broken,
    /// The watch is over with this last message.
    Final(WatchMessage),
    /// The receiver is gone.
    Closed,
}

impl Watcher {
    /// Watches until the receiver goes away or the watch ends for good.
    async fn run(mut self) {
        let mut backoff = BACKOFF.0;
        loop {
            let mut options = ec::WatchOptions::new().with_prefix();
            if self.next > 0 {
                options = options.with_start_revision(self.next);
            }
            let mut client = self.client.clone();
            let open = timed(
                REQUEST_TIMEOUT,
                client.watch(self.key.clone(), Some(options)),
            );
            let opened = tokio::select! {
                opened = open => opened,
                () = self.tx.closed() => return,
            };
            let end = match opened {
                Ok(stream) => self.pump(stream, &mut backoff).await,
                Err(e) if is_permanent(&e) => {
                    End::Final(WatchMessage::Failed(map_err("watch", &e).to_string()))
                }
                Err(e) => {
                    tracing::debug!("etcd watch on {} failed: {e}", self.key);
                    End::Broken
                }
            };
            match end {
                End::Broken => {}
                End::Final(message) => {
                    let _ = self.tx.send(message).await;
                    return;
                }
                End::Closed => return,
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = self.tx.closed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Forwards the responses of one etcd watch stream until it ends.
    async fn pump(&mut self, mut stream: ec::WatchStream, backoff: &mut Duration) -> End {
        let mut watch_id = None;
        let end = loop {
            let resp = tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(resp)) => resp,
                    Ok(None) => break End::Broken,
                    Err(e) => {
                        tracing::debug!("etcd watch on {} broke: {e}", self.key);
                        break End::Broken;
                    }
                },
                () = self.tx.closed() => break End::Closed,
            };
            if resp.compact_revision() > 0 {
                let compact_revision = resp.compact_revision();
                break End::Final(WatchMessage::Compacted { compact_revision });
            }
            if resp.canceled() {
                let reason = format!("etcd watch canceled: {}", resp.cancel_reason());
                break End::Final(WatchMessage::Failed(reason));
            }
            if resp.created() {
                watch_id = Some(resp.watch_id());
                *backoff = BACKOFF.0;
                if self.next <= 0 {
                    // Watching from "now": pin it so a reconnect resumes there.
                    self.next = resp.header().map_or(0, |h| h.revision() + 1);
                }
            }
            let events = match self.events(&resp) {
                Ok(events) if events.is_empty() => continue,
                Ok(events) => events,
                Err(e) => break End::Final(WatchMessage::Failed(e.to_string())),
            };
            let last = events.last().map_or(self.delivered, |e| e.revision);
            if self.tx.send(WatchMessage::Events(events)).await.is_err() {
                break End::Closed;
            }
            self.delivered = last;
            self.next = last + 1;
        };
        if let (End::Closed, Some(id)) = (&end, watch_id) {
            let _ = stream.cancel(id).await;
        }
        end
    }

    /// The not yet delivered events of a response, with relative keys.
    fn events(&self, resp: &ec::WatchResponse) -> Result<Vec<KvEvent>, StoreError> {
        let mut events = Vec::with_capacity(resp.events().len());
        for event in resp.events() {
            let Some(kv) = event.kv().filter(|kv| kv.mod_revision() > self.delivered) else {
                continue;
            };
            let (kind, value) = match event.event_type() {
                ec::EventType::Put => (KvEventKind::Put, kv.value().to_vec()),
                ec::EventType::Delete => (KvEventKind::Delete, Vec::new()),
            };
            let key = relative_key(&self.strip, kv.key())?;
            events.push(KvEvent {
                kind,
                key,
                value,
                revision: kv.mod_revision(),
            });
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_relative() {
        assert_eq!(relative_key("/p/", b"/p/a/b").unwrap(), "a/b");
        assert!(matches!(
            relative_key("/p/", b"/q/a"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            relative_key("/p/", b"/p/\xff"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
