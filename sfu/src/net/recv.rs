//! The receive thread: one loop on the media socket, taking up to [`RECV_BATCH`] datagrams per
//! `recvmmsg(2)` (one `recv_from` each elsewhere). Each datagram goes to the worker that owns its
//! session (found by the demux table), STUN and DTLS on the urgent queue.

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
/// Datagrams taken per `recvmmsg`: a burst (a keyframe's packets, a round of viewers' feedback)
/// costs one system call instead of one each.
pub const RECV_BATCH: usize = 32;

/// Receive buffers for [`recv_batch`].
pub struct RecvBuffers {
    bufs: Vec<[u8; MAX_DATAGRAM + 1]>,
    got: Vec<(usize, std::net::SocketAddr)>,
}

impl Default for RecvBuffers {
    fn default() -> Self {
        Self { bufs: vec![[0u8; MAX_DATAGRAM + 1]; RECV_BATCH], got: Vec::with_capacity(RECV_BATCH) }
    }
}

impl RecvBuffers {
    /// The datagrams of the last [`recv_batch`]: (bytes as received — longer than
    /// `MAX_DATAGRAM` when it was cut —, sender).
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], std::net::SocketAddr)> {
        self.got.iter().zip(&self.bufs).map(|(&(n, from), b)| (&b[..n.min(b.len())], from))
    }
}

/// Wait (up to the socket's read timeout) for datagrams and take what is there, up to
/// [`RECV_BATCH`]. Returns how many.
#[cfg(target_os = "linux")]
pub fn recv_batch(socket: &UdpSocket, b: &mut RecvBuffers) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    b.got.clear();
    // SAFETY: all-zero sockaddr_storage / iovec / mmsghdr are valid (empty) values.
    let mut addrs: [libc::sockaddr_storage; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..RECV_BATCH {
        iovs[i] = libc::iovec { iov_base: b.bufs[i].as_mut_ptr() as *mut libc::c_void, iov_len: b.bufs[i].len() };
        msgs[i].msg_hdr.msg_name = &mut addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every mmsghdr points at an address slot and a buffer that outlive the call, with
    // their true lengths; MSG_WAITFORONE returns once one datagram is in (the socket's timeout
    // bounds the wait for it).
    let n = unsafe {
        libc::recvmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), RECV_BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for i in 0..n as usize {
        let Some(from) = read_sockaddr(&addrs[i]) else { continue };
        // A datagram longer than the buffer is cut to it (MSG_TRUNC): reported one byte over.
        let len = if msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0 { MAX_DATAGRAM + 1 } else { msgs[i].msg_len as usize };
        if i != b.got.len() {
            b.bufs.swap(i, b.got.len());
        }
        b.got.push((len, from));
    }
    Ok(b.got.len())
}

#[cfg(not(target_os = "linux"))]
pub fn recv_batch(socket: &UdpSocket, b: &mut RecvBuffers) -> std::io::Result<usize> {
    b.got.clear();
    let (n, from) = socket.recv_from(&mut b.bufs[0])?;
    b.got.push((n, from));
    Ok(1)
}

/// The sender's address the kernel wrote.
#[cfg(target_os = "linux")]
fn read_sockaddr(a: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin = unsafe { &*(a as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6 = unsafe { &*(a as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

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
        let mut bufs = RecvBuffers::default();
        let c = counters;
        while !self.stop.load(Ordering::Relaxed) {
            self.apply_ctl(&mut table, &mut legs, c);
            match recv_batch(&self.socket, &mut bufs) {
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => {
                    // ICMP port unreachable and the like surface here on Linux; keep serving.
                    tracing::trace!("udp recv: {e}");
                    continue;
                }
            };
            // What the workers registered while this thread waited applies to these datagrams
            // already (a leg or session opened just before its first datagram arrived).
            self.apply_ctl(&mut table, &mut legs, c);
            for (buf, from) in bufs.datagrams() {
                self.deliver(&mut table, &legs, buf, from, c);
            }
        }
    }

    /// One datagram received: to the worker of its session or cascade leg, or dropped.
    fn deliver(
        &self,
        table: &mut DemuxTable,
        legs: &std::collections::HashMap<u32, usize>,
        buf: &[u8],
        from: std::net::SocketAddr,
        c: &Counters,
    ) {
        let n = buf.len();
        c.datagrams_in.fetch_add(1, Ordering::Relaxed);
        if crate::metrics::per_packet() {
            c.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        }
        if n == 0 || n > MAX_DATAGRAM {
            c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            return;
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
            return;
        }
        let Some(route) = table.route(from, &buf[..n]) else {
            c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        c.demux_addresses.store(table.addresses(), Ordering::Relaxed);
        let msg = WorkerMsg::Input(Input::Datagram { session: route.session, from, data: BytesMut::from(&buf[..n]), at: Instant::now() });
        // RFC 7983: STUN is 0-3, DTLS 20-63; media and RTCP (128-191) keep their FIFO order.
        let urgent = matches!(buf[0], 0..=3 | 20..=63);
        let queue = if urgent { &self.urgent } else { &self.media };
        if queue.get(route.worker).is_none_or(|tx| tx.try_send(msg).is_err()) {
            c.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A burst comes in whole, in order, each datagram with its sender; an empty datagram is
    /// one; one longer than the limit is reported longer (and so dropped by the loop); with
    /// nothing there the wait ends at the socket's timeout.
    #[test]
    fn a_burst_is_taken_in_batches_with_senders_and_lengths() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let to = rx.local_addr().unwrap();
        let (a, b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        for i in 0..70u16 {
            let s = if i % 2 == 0 { &a } else { &b };
            s.send_to(&i.to_be_bytes().repeat(1 + usize::from(i)), to).unwrap();
        }
        a.send_to(&[], to).unwrap();
        a.send_to(&[7u8; MAX_DATAGRAM + 100], to).unwrap();
        let mut bufs = RecvBuffers::default();
        let mut got: Vec<(Vec<u8>, std::net::SocketAddr)> = Vec::new();
        let mut calls = 0;
        while got.len() < 72 && calls < 100 {
            calls += 1;
            recv_batch(&rx, &mut bufs).unwrap();
            got.extend(bufs.datagrams().map(|(d, f)| (d.to_vec(), f)));
        }
        assert_eq!(got.len(), 72);
        assert!(calls < 72, "batched: {calls} calls for 72 datagrams");
        for (i, (d, from)) in got.iter().take(70).enumerate() {
            assert_eq!(d, &(i as u16).to_be_bytes().repeat(1 + i), "datagram {i}");
            assert_eq!(*from, if i % 2 == 0 { a.local_addr().unwrap() } else { b.local_addr().unwrap() });
        }
        assert!(got[70].0.is_empty());
        assert_eq!(got[71].0.len(), MAX_DATAGRAM + 1, "cut, and said to be longer than the limit");
        let err = recv_batch(&rx, &mut bufs).unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
    }
}
