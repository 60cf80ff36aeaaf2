//! A port that reaches an external VXLAN tunnel endpoint (a standard VXLAN
//! device such as Linux's `vxlan`) through the agent's tunnel socket.
//!
//! Frames sent to the port leave as VXLAN datagrams with the endpoint's VNI
//! (checksums completed, TCP super-frames segmented, see
//! [`super::Datagrams`]); frames the endpoint sends arrive through the
//! tunnel's receive loop, which hands them to [`VtepPort::deliver`].

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::batch::{RxBatch, TxBatch};
use super::encap::{offload_of_received, Datagrams};
use super::udp::TunnelSocket;
use super::vnet::{VnetHeader, VNET_HDR_LEN};
use crate::wire::Vni;

/// Frames queued from the endpoint before the port's task takes them.
const QUEUE: usize = 1024;

/// A frame from the endpoint with the offload header it goes on with.
type Queued = (VnetHeader, Vec<u8>);

/// A VXLAN endpoint reached through the tunnel socket.
#[derive(Debug)]
pub struct VtepPort {
    name: String,
    socket: Arc<TunnelSocket>,
    endpoint: SocketAddr,
    vni: Vni,
    max_ip_len: usize,
    inbox: mpsc::Sender<Queued>,
    queue: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    peeked: Mutex<Option<Queued>>,
    scratch: Box<Mutex<Datagrams>>,
}

impl VtepPort {
    /// A port named `name` reaching `endpoint` on `vni` over `socket`.
    pub fn new(
        name: &str,
        socket: Arc<TunnelSocket>,
        endpoint: SocketAddr,
        vni: Vni,
        max_ip_len: usize,
    ) -> VtepPort {
        let (inbox, queue) = mpsc::channel(QUEUE);
        VtepPort {
            name: name.to_owned(),
            socket,
            endpoint,
            vni,
            max_ip_len,
            inbox,
            queue: tokio::sync::Mutex::new(queue),
            peeked: Mutex::new(None),
            scratch: Box::default(),
        }
    }

    /// The endpoint's address.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The endpoint's VNI.
    pub fn vni(&self) -> Vni {
        self.vni
    }

    /// Queues a frame the endpoint sent; false if the queue is full (dropped).
    /// Checksums the sender's kernel left partial, and TCP super-frames it
    /// did not segment, get the offload header that describes them.
    pub fn deliver(&self, frame: &[u8]) -> bool {
        let mut frame = frame.to_vec();
        let vnet = offload_of_received(&mut frame, self.max_ip_len);
        self.inbox.try_send((vnet, frame)).is_ok()
    }

    /// The port's name.
    pub fn ifname(&self) -> &str {
        &self.name
    }

    /// Waits until a frame from the endpoint is queued.
    pub async fn readable(&self) -> io::Result<()> {
        let mut queue = self.queue.lock().await;
        if self
            .peeked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Ok(());
        }
        let frame = queue
            .recv()
            .await
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        *self.peeked.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame);
        Ok(())
    }

    fn take_peeked(&self) -> Option<Queued> {
        self.peeked.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The tunnel socket is always writable (full buffers drop, as UDP does).
    pub async fn writable(&self) -> io::Result<()> {
        Ok(())
    }

    fn fill(rx: &mut RxBatch, first: Option<Queued>, queue: &mut mpsc::Receiver<Queued>) -> usize {
        rx.begin_fill();
        let mut next = first;
        let mut i = 0;
        while i < rx.capacity() {
            let Some((vnet, frame)) = next.take().or_else(|| queue.try_recv().ok()) else {
                break;
            };
            let slot = &mut rx.slots_mut()[i];
            if frame.len() + VNET_HDR_LEN > slot.len() {
                rx.note_dropped();
                continue;
            }
            slot[..VNET_HDR_LEN].copy_from_slice(&vnet.to_bytes());
            slot[VNET_HDR_LEN..VNET_HDR_LEN + frame.len()].copy_from_slice(&frame);
            rx.commit(i, VNET_HDR_LEN + frame.len(), false);
            i += 1;
        }
        rx.len()
    }

    /// Takes the queued frames without waiting.
    pub fn try_recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        match self.queue.try_lock() {
            Ok(mut queue) => Ok(Self::fill(rx, self.take_peeked(), &mut queue)),
            Err(_) => Ok(0),
        }
    }

    /// Waits for frames from the endpoint, then takes a batch.
    pub async fn recv_batch(&self, rx: &mut RxBatch) -> io::Result<usize> {
        let mut queue = self.queue.lock().await;
        let first = match self.take_peeked() {
            Some(frame) => frame,
            None => queue
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?,
        };
        Ok(Self::fill(rx, Some(first), &mut queue))
    }

    fn send_frames<'a>(&self, frames: impl Iterator<Item = (VnetHeader, &'a [u8])>) -> usize {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        scratch.clear();
        let mut refused = 0;
        for (vnet, frame) in frames {
            if scratch
                .push_frame(self.endpoint, self.vni, &vnet, frame, self.max_ip_len)
                .is_err()
            {
                refused += 1;
            }
        }
        self.socket.send(&scratch);
        refused
    }

    /// Sends every queued frame of `tx`; returns how many were taken.
    pub fn try_send_batch(&self, tx: &mut TxBatch) -> io::Result<usize> {
        let n = tx.len();
        self.send_frames(
            tx.pending()
                .filter_map(|w| Some((VnetHeader::parse(w)?, w.get(VNET_HDR_LEN..)?))),
        );
        tx.consume(n);
        Ok(n)
    }

    /// Sends every queued frame of `tx`.
    pub async fn send_batch(&self, tx: &mut TxBatch) -> io::Result<()> {
        self.try_send_batch(tx).map(drop)
    }

    /// Sends frames `which` of `rx` to the endpoint.
    pub fn send_rx(&self, rx: &RxBatch, which: &[usize]) -> io::Result<usize> {
        if which.iter().any(|&i| i >= rx.len()) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.send_frames(which.iter().map(|&i| (rx.vnet(i), rx.frame(i))));
        Ok(which.len())
    }

    /// Sends one frame to the endpoint.
    pub fn try_send(&self, vnet: &VnetHeader, frame: &[u8]) -> io::Result<()> {
        match self.send_frames(std::iter::once((*vnet, frame))) {
            0 => Ok(()),
            _ => Err(io::Error::from(io::ErrorKind::InvalidData)),
        }
    }
}
