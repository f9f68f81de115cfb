//! Batched UDP sends: one `sendmmsg(2)` for the datagrams a fan-out produces, instead of one
//! `send_to` each. A forwarded packet goes to many viewers at once, so this is where the
//! per-datagram syscall cost (≈ 1.4 µs of the ≈ 3.2 µs a forwarded packet cost) is amortised.
//!
//! Linux only; elsewhere it falls back to one `send_to` per datagram. Errors for one datagram
//! (an unreachable viewer) never stop the rest: the batch continues after it.

use bytes::BytesMut;
use std::net::{SocketAddr, UdpSocket};

/// Datagrams handed to the kernel per `sendmmsg` call.
pub const MAX_BATCH: usize = 64;

/// What the media socket asks the kernel for, per direction. Every publisher's and viewer's
/// datagrams share this one socket; the default (about 208 KiB on Linux) holds a few hundred
/// datagrams, so a burst — a flood of garbage, a stall of the receive thread, many key frames at
/// once — overflowed it and dropped good media with the bad (the garbage test saw 600–1800
/// kernel drops per run, and the publisher's losses reached viewers as NACK repairs).
pub const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Ask for [`SOCKET_BUFFER_BYTES`] of receive and send buffer; returns what the kernel granted
/// (receive, send), which Linux caps at `net.core.rmem_max` / `wmem_max` (raise those for
/// production: docs/architecture.md §6).
#[cfg(target_os = "linux")]
pub fn grow_buffers(socket: &UdpSocket) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let want = SOCKET_BUFFER_BYTES as libc::c_int;
    let get = |opt: libc::c_int| -> usize {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given; a failure leaves v = 0.
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, &mut v as *mut libc::c_int as *mut libc::c_void, &mut len) };
        v.max(0) as usize
    };
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: `want` is a valid c_int for the length given. A refusal keeps the default.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &want as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    (get(libc::SO_RCVBUF), get(libc::SO_SNDBUF))
}

#[cfg(not(target_os = "linux"))]
pub fn grow_buffers(_socket: &UdpSocket) -> (usize, usize) {
    (0, 0)
}

/// Buffers a batch keeps for the next datagrams once sent, and the least capacity kept (a
/// full-size datagram's).
const SPARE: usize = 512;
const SPARE_CAPACITY: usize = 1500;

/// Datagrams waiting to be sent, owned by one worker and reused (no allocation per packet once
/// warm): the list, and the buffers of datagrams already sent, handed out again by
/// [`buffer`](Self::buffer) (the lean path writes each forwarded packet into one).
#[derive(Default)]
pub struct SendBatch {
    items: Vec<(SocketAddr, BytesMut)>,
    spare: Vec<BytesMut>,
}

impl SendBatch {
    /// An empty buffer with room for `capacity` bytes: one of a datagram already sent when
    /// there is one.
    pub fn buffer(&mut self, capacity: usize) -> BytesMut {
        match self.spare.pop() {
            Some(mut b) => {
                b.clear();
                b.reserve(capacity);
                b
            }
            None => BytesMut::with_capacity(capacity.max(SPARE_CAPACITY)),
        }
    }

    /// Empty the list, keeping the buffers worth reusing.
    fn recycle(&mut self) {
        for (_, b) in self.items.drain(..) {
            if self.spare.len() < SPARE && b.capacity() >= SPARE_CAPACITY {
                self.spare.push(b);
            }
        }
    }

    pub fn push(&mut self, to: SocketAddr, datagram: BytesMut) {
        self.items.push((to, datagram));
    }

    /// Send everything queued; returns (datagrams sent, bytes sent). The batch is empty after.
    /// Take the queued datagrams instead of sending them (the virtual-time tests deliver them).
    #[cfg(test)]
    pub fn drain(&mut self) -> Vec<(SocketAddr, BytesMut)> {
        std::mem::take(&mut self.items)
    }

    #[cfg(any(test, feature = "internals"))]
    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[cfg(any(test, feature = "internals"))]
    /// Hand each queued datagram to `f`, then empty the batch (its capacity stays): the forward
    /// bench's other ways to send, or none.
    pub fn drain_each(&mut self, mut f: impl FnMut(SocketAddr, &BytesMut)) {
        for (to, data) in &self.items {
            f(*to, data);
        }
        self.recycle();
    }

    pub fn flush(&mut self, socket: &UdpSocket) -> (usize, usize) {
        let mut sent = (0, 0);
        for chunk in self.items.chunks(MAX_BATCH) {
            let (n, b) = send_chunk(socket, chunk);
            sent.0 += n;
            sent.1 += b;
        }
        self.recycle();
        sent
    }
}

#[cfg(target_os = "linux")]
fn send_chunk(socket: &UdpSocket, chunk: &[(SocketAddr, BytesMut)]) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero sockaddr_storage / iovec / mmsghdr is a valid (empty) value of each.
    let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let n = chunk.len().min(MAX_BATCH);
    for i in 0..n {
        let (to, data) = &chunk[i];
        let len = write_sockaddr(to, &mut addrs[i]);
        iovs[i] = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        msgs[i].msg_hdr.msg_name = &mut addrs[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
        msgs[i].msg_hdr.msg_namelen = len;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    let fd = socket.as_raw_fd();
    let mut done = 0usize;
    let mut bytes = 0usize;
    let mut at = 0usize;
    // Bounded: each round either sends at least one datagram or skips the one that failed.
    while at < n {
        // SAFETY: msgs[at..n] point at addrs/iovs entries and datagram buffers that all outlive
        // this call; the kernel only reads them (and writes msg_len).
        let r = unsafe { libc::sendmmsg(fd, msgs[at..].as_mut_ptr(), (n - at) as libc::c_uint, 0) };
        if r > 0 {
            for m in &msgs[at..at + r as usize] {
                bytes += m.msg_len as usize;
            }
            done += r as usize;
            at += r as usize;
        } else {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // The datagram at `at` failed (e.g. ICMP-refused peer, full buffer): skip it, go on.
            tracing::trace!("sendmmsg to {}: {err}", chunk[at].0);
            at += 1;
        }
    }
    (done, bytes)
}

/// `to` as the kernel takes it (also the loadtest floor's addresses).
#[cfg(target_os = "linux")]
pub fn write_sockaddr(to: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match to {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned for it.
            unsafe { std::ptr::write(out as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in6 and suitably aligned for it.
            unsafe { std::ptr::write(out as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_chunk(socket: &UdpSocket, chunk: &[(SocketAddr, BytesMut)]) -> (usize, usize) {
    let mut sent = (0, 0);
    for (to, data) in chunk {
        if let Ok(n) = socket.send_to(data, to) {
            sent.0 += 1;
            sent.1 += n;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_reaches_every_destination_in_order_and_survives_a_dead_one() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        // A port nobody listens on: the kernel may refuse (ICMP) later datagrams to it.
        let dead = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let mut b = SendBatch::default();
        for round in 0..100u32 {
            for (i, r) in rx.iter().enumerate() {
                b.push(r.local_addr().unwrap(), BytesMut::from(&[round as u8, i as u8][..]));
            }
            b.push(dead, BytesMut::from(&b"x"[..]));
        }
        let (n, _) = b.flush(&tx);
        assert!(b.items.is_empty());
        assert!(n >= 300, "the live destinations all got theirs ({n} sent)");
        for (i, r) in rx.iter().enumerate() {
            r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 8];
            for round in 0..100u32 {
                let (len, _) = r.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..len], &[round as u8, i as u8]);
            }
        }
    }

    #[test]
    fn sent_datagrams_buffers_are_handed_out_again_up_to_a_bound() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut b = SendBatch::default();
        let first = b.buffer(1200);
        assert!(first.capacity() >= 1200);
        let ptr = first.as_ptr();
        b.push(to, first);
        b.flush(&tx);
        let again = b.buffer(1200);
        assert_eq!(again.as_ptr(), ptr, "the sent datagram's buffer came back");
        assert!(again.is_empty());
        // A small buffer is not kept; at most SPARE are.
        b.push(to, BytesMut::from(&b"tiny"[..]));
        for _ in 0..SPARE + 10 {
            b.push(to, BytesMut::with_capacity(SPARE_CAPACITY));
        }
        b.drain_each(|_, _| {});
        assert_eq!(b.spare.len(), SPARE);
    }
}
