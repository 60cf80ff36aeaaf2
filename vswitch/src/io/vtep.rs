//! A port that reaches an external VXLAN tunnel endpoint (a standard VXLAN
//! device such as Linux's `vxlan`) through the agent's tunnel socket.
//!
//! Frames sent to the port leave as VXLAN datagrams with the endpoint's VNI
//! (checksums completed, TCP super-frames segmented, see
//! [`super::Datagrams`]); frames the endpoint sends arrive through the
//! tunnel's receive loop, which decides them there as coming from this
//! port (after [`VtepPort::offload_of`]): the port itself has nothing to
//! receive, and its reads never return a frame.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::batch::{RxBatch, TxBatch};
use super::encap::{offload_of_received, Datagrams};
use super::udp::TunnelSocket;
use super::vnet::{VnetHeader, VNET_HDR_LEN};
use crate::wire::Vni;

/// A VXLAN endpoint reached through the tunnel socket.
#[derive(Debug)]
pub struct VtepPort {
    name: String,
    socket: Arc<TunnelSocket>,
    endpoint: SocketAddr,
    vni: Vni,
    max_ip_len: usize,
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
        VtepPort {
            name: name.to_owned(),
            socket,
            endpoint,
            vni,
            max_ip_len,
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

    /// Fixes a frame the endpoint sent (in place) and returns the
    /// offload header it goes on with: checksums the sender's kernel left
    /// partial are completed, and TCP super-frames it did not segment get
    /// the header that describes them.
    pub fn offload_of(&self, frame: &mut [u8]) -> VnetHeader {
        offload_of_received(frame, self.max_ip_len)
    }

    /// The port's name.
    pub fn ifname(&self) -> &str {
        &self.name
    }

    /// Never ready: the endpoint's frames are decided by the tunnel's
    /// receive loop, not read from the port.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::pending().await
    }

    /// The tunnel socket is always writable (full buffers drop, as UDP does).
    pub async fn writable(&self) -> io::Result<()> {
        Ok(())
    }

    /// Nothing to take (see [`VtepPort::readable`]).
    pub fn try_recv_batch(&self, _rx: &mut RxBatch) -> io::Result<usize> {
        Ok(0)
    }

    /// Never returns (see [`VtepPort::readable`]).
    pub async fn recv_batch(&self, _rx: &mut RxBatch) -> io::Result<usize> {
        std::future::pending().await
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
