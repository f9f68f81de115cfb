//! Demultiplexing of the one UDP port.
//!
//! A datagram from a known 5-tuple goes to the session that address belongs to. A datagram from an
//! unknown address is accepted only if it is a STUN Binding Request whose USERNAME starts with the
//! ICE ufrag of a live session (`server_ufrag:client_ufrag`, RFC 8445 §7.2.2); the address is
//! then bound to that session. Everything else is dropped and counted.
//!
//! The [`DemuxTable`] is owned by the receive thread alone, so lookups take no lock.

use crate::ids::SessionKey;
use std::collections::HashMap;
use std::net::SocketAddr;

const STUN_HEADER: usize = 20;
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
/// Longest USERNAME we look at (RFC 8489 caps it at 513 bytes).
const MAX_USERNAME: usize = 513;

/// If `buf` is a STUN Binding Request, the local (our) ufrag in its USERNAME attribute.
///
/// Never panics; any malformed input gives `None`.
pub fn binding_request_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < STUN_HEADER || buf[0] & 0xc0 != 0 {
        return None;
    }
    let msg_type = u16::from_be_bytes([buf[0], buf[1]]);
    if msg_type != 0x0001 || buf[4..8] != STUN_MAGIC {
        return None;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let body = buf.get(STUN_HEADER..STUN_HEADER.checked_add(len)?)?;
    let mut at = 0usize;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let value = body.get(at + 4..at + 4 + alen)?;
        if typ == ATTR_USERNAME {
            if alen > MAX_USERNAME {
                return None;
            }
            let username = std::str::from_utf8(value).ok()?;
            let local = username.split(':').next()?;
            return (!local.is_empty()).then_some(local);
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    None
}

const ATTR_USE_CANDIDATE: u16 = 0x0025;

/// Whether `buf` is a STUN Binding Request carrying USE-CANDIDATE (the client nominates the
/// path it came on). Never panics.
pub fn is_nomination(buf: &[u8]) -> bool {
    if buf.len() < STUN_HEADER || buf[0..2] != [0x00, 0x01] || buf[4..8] != STUN_MAGIC {
        return false;
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let Some(body) = buf.get(STUN_HEADER..STUN_HEADER + len) else { return false };
    let mut at = 0usize;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        if typ == ATTR_USE_CANDIDATE {
            return true;
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    false
}

/// Whether `buf` is a STUN Binding Success Response.
pub fn is_binding_success(buf: &[u8]) -> bool {
    buf.len() >= STUN_HEADER && buf[0..2] == [0x01, 0x01] && buf[4..8] == STUN_MAGIC
}

/// Any STUN message (RFC 7983: first byte 0..=3).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| *b < 4)
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub worker: usize,
    pub session: SessionKey,
}

/// Routing state of the receive thread: ufrags of live sessions and the addresses bound to them.
#[derive(Default)]
pub struct DemuxTable {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
    addrs_of: HashMap<SessionKey, Vec<SocketAddr>>,
    ufrag_of: HashMap<SessionKey, String>,
}

/// At most this many remote addresses per session (ICE may try a few candidates; more is abuse).
const MAX_ADDRS_PER_SESSION: usize = 8;

impl DemuxTable {
    /// A session can now be reached through STUN checks carrying `ufrag`.
    pub fn register(&mut self, ufrag: String, route: Route) {
        if let Some(old) = self.ufrag_of.insert(route.session, ufrag.clone()) {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(ufrag, route);
    }

    /// Forget a session, its ufrag and every address bound to it.
    pub fn remove(&mut self, session: SessionKey) {
        if let Some(ufrag) = self.ufrag_of.remove(&session) {
            self.by_ufrag.remove(&ufrag);
        }
        for addr in self.addrs_of.remove(&session).unwrap_or_default() {
            if self.by_addr.get(&addr).is_some_and(|r| r.session == session) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Where a datagram from `from` goes, binding the address on a valid first STUN check.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<Route> {
        if let Some(ufrag) = binding_request_ufrag(datagram) {
            // A binding request names its session explicitly: honour it even from a known address
            // (ICE restart or a NAT rebinding moves an address between sessions).
            let route = *self.by_ufrag.get(ufrag)?;
            self.bind(from, route);
            return Some(route);
        }
        self.by_addr.get(&from).copied()
    }

    fn bind(&mut self, from: SocketAddr, route: Route) {
        match self.by_addr.insert(from, route) {
            Some(old) if old.session == route.session => return,
            Some(old) => {
                if let Some(list) = self.addrs_of.get_mut(&old.session) {
                    list.retain(|a| *a != from);
                }
            }
            None => {}
        }
        let list = self.addrs_of.entry(route.session).or_default();
        list.push(from);
        if list.len() > MAX_ADDRS_PER_SESSION {
            let evicted = list.remove(0);
            self.by_addr.remove(&evicted);
        }
    }

    /// Sessions registered (for leak checks).
    pub fn sessions(&self) -> usize {
        self.ufrag_of.len()
    }

    /// Remote addresses bound (for leak checks).
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

/// Changes to the receive thread's demux table, from the workers.
pub(crate) enum DemuxCtl {
    Register(String, Route),
    Remove(SessionKey),
    /// A cascade leg's datagrams go to this worker (`None`: the leg is gone).
    Relay(u32, Option<usize>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ParticipantId, SessionRole};

    fn binding(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC);
        m.extend_from_slice(&[7u8; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn nominations_are_recognised() {
        let mut m = binding(b"srv:cli");
        assert!(!is_nomination(&m));
        m.extend_from_slice(&[0x00, 0x25, 0x00, 0x00]);
        let len = (m.len() - STUN_HEADER) as u16;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        assert!(is_nomination(&m));
        for cut in 0..m.len() {
            let _ = is_nomination(&m[..cut]);
        }
        assert!(!is_binding_success(&m));
    }

    #[test]
    fn parses_username_and_rejects_malformed() {
        assert_eq!(binding_request_ufrag(&binding(b"srv:cli")), Some("srv"));
        let good = binding(b"srv:cli");
        for cut in 0..good.len() {
            // Every truncation is either rejected or still finds a well-formed prefix; never panics.
            let _ = binding_request_ufrag(&good[..cut]);
        }
        assert_eq!(binding_request_ufrag(&binding(b":cli")), None);
        let mut wrong_magic = good.clone();
        wrong_magic[5] ^= 1;
        assert_eq!(binding_request_ufrag(&wrong_magic), None);
        let mut lying_len = good.clone();
        lying_len[3] = 0xff;
        assert_eq!(binding_request_ufrag(&lying_len), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::Rng;
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let n = rng.random_range(0..64);
            let mut v: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            if n > 8 && rng.random_bool(0.5) {
                v[0] = 0;
                v[1] = 1;
                v[4..8].copy_from_slice(&STUN_MAGIC);
            }
            let _ = binding_request_ufrag(&v);
        }
    }

    #[test]
    fn binds_and_forgets_addresses() {
        let mut t = DemuxTable::default();
        let s = SessionKey { participant: ParticipantId(1), role: SessionRole::Publisher };
        let route = Route { worker: 0, session: s };
        t.register("abc".into(), route);
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(t.route(a, b"garbage"), None);
        assert_eq!(t.route(a, &binding(b"nope:x")), None);
        assert_eq!(t.route(a, &binding(b"abc:x")), Some(route));
        assert_eq!(t.route(a, b"after binding"), Some(route));
        for p in 0..20 {
            let b = SocketAddr::new(a.ip(), 6000 + p);
            t.route(b, &binding(b"abc:x"));
        }
        assert_eq!(t.addresses(), MAX_ADDRS_PER_SESSION);
        t.remove(s);
        assert_eq!(t.route(a, b"x"), None);
        assert_eq!((t.sessions(), t.addresses()), (0, 0));
    }
}
