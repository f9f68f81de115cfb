//! The receive thread: one `recv_from` loop on the media socket. Each datagram goes to the
//! worker that owns its session (found by the demux table), STUN and DTLS on the urgent queue.

use crate::net::demux::{DemuxCtl, DemuxTable};
use crate::worker::msg::{Input, WorkerMsg};
use crate::worker::plane::Counters;
use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Largest datagram we accept; anything longer is truncated by the kernel and dropped here.
const MAX_DATAGRAM: usize = 1500;

pub(crate) struct RecvLoop {
    pub socket: Arc<UdpSocket>,
    /// Per worker: the media queue and the urgent queue (both bounded; a full one drops).
    pub media: Vec<Sender<WorkerMsg>>,
    pub urgent: Vec<Sender<WorkerMsg>>,
    pub ctl: Receiver<DemuxCtl>,
    pub stop: Arc<AtomicBool>,
}

impl RecvLoop {
    /// Runs until `stop` (the socket's read timeout bounds each wait).
    pub fn run(self, counters: &Counters) {
        let mut table = DemuxTable::default();
        // Cascade legs received here and their workers (crate::relay).
        let mut legs: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let c = counters;
        while !self.stop.load(Ordering::Relaxed) {
            self.apply_ctl(&mut table, &mut legs, c);
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => {
                    // ICMP port unreachable and the like surface here on Linux; keep serving.
                    tracing::trace!("udp recv: {e}");
                    continue;
                }
            };
            // What the workers registered while this thread waited applies to this datagram
            // already (a leg or session opened just before its first datagram arrived).
            self.apply_ctl(&mut table, &mut legs, c);
            c.datagrams_in.fetch_add(1, Ordering::Relaxed);
            if crate::metrics::per_packet() {
                c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            if n == 0 || n > MAX_DATAGRAM {
                c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if buf[0] == crate::relay::RELAY_MAGIC {
                // A cascade datagram: its leg says which worker; that worker authenticates it.
                let worker = crate::relay::leg_of(&buf[..n]).and_then(|leg| legs.get(&leg).map(|w| (leg, *w)));
                let delivered = worker.is_some_and(|(leg, w)| {
                    let msg = WorkerMsg::Input(Input::Relay { leg, data: BytesMut::from(&buf[..n]), at: Instant::now() });
                    self.media.get(w).is_some_and(|tx| tx.try_send(msg).is_ok())
                });
                if !delivered {
                    c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let Some(route) = table.route(from, &buf[..n]) else {
                c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            c.demux_addresses.store(table.addresses(), Ordering::Relaxed);
            let msg =
                WorkerMsg::Input(Input::Datagram { session: route.session, from, data: BytesMut::from(&buf[..n]), at: Instant::now() });
            // RFC 7983: STUN is 0-3, DTLS 20-63; media and RTCP (128-191) keep their FIFO order.
            let urgent = matches!(buf[0], 0..=3 | 20..=63);
            let queue = if urgent { &self.urgent } else { &self.media };
            if queue.get(route.worker).is_none_or(|tx| tx.try_send(msg).is_err()) {
                c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    /// Changes the workers sent for the demux table and the cascade legs.
    fn apply_ctl(&self, table: &mut DemuxTable, legs: &mut std::collections::HashMap<u32, usize>, c: &Counters) {
        for msg in self.ctl.try_iter() {
            match msg {
                DemuxCtl::Register(ufrag, route) => table.register(ufrag, route),
                DemuxCtl::Remove(key) => table.remove(key),
                DemuxCtl::Relay(leg, Some(worker)) => {
                    legs.insert(leg, worker);
                }
                DemuxCtl::Relay(leg, None) => {
                    legs.remove(&leg);
                }
            }
            c.demux_sessions.store(table.sessions(), Ordering::Relaxed);
            c.demux_addresses.store(table.addresses(), Ordering::Relaxed);
        }
    }
}
