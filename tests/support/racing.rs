//! Races made likely: a loopback TCP proxy that delays every byte by a
//! fixed time in each direction. An API server whose etcd client goes
//! through it spends many milliseconds between reading an object and
//! committing its write, while a client on the direct path changes the
//! object under it in a fraction of that — the window a check made outside
//! the write's transaction leaves open.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A delaying proxy on a loopback port; stops (with every connection
/// through it) when dropped.
pub struct SlowLink {
    /// `HOST:PORT` to connect to instead of the target.
    pub endpoint: String,
    task: JoinHandle<()>,
}

impl SlowLink {
    /// Proxies to `target` (`HOST:PORT`, or a URL), adding `delay` each way.
    pub async fn to(target: &str, delay: Duration) -> SlowLink {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let endpoint = listener.local_addr().expect("bound address").to_string();
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) aborts every
            // connection's pumps.
            let mut connections = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else {
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                connections.spawn(pump(in_read, out_write, delay));
                connections.spawn(pump(out_read, in_write, delay));
            }
        });
        SlowLink { endpoint, task }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk `delay` after it was read: latency
/// without throttling, order kept.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(reader, writer);
}
