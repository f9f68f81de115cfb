//! The demux of the one UDP port (sfu/src/net/demux.rs): a datagram from an unknown address is
//! routed only by a STUN Binding Request whose USERNAME starts with a live session's ufrag.
//! The input is a short script of datagrams from a few addresses against a table with two
//! registered sessions.
//! Invariants: never panics; a ufrag read from USERNAME is non-empty, has no ':' and is at most
//! 513 bytes; a datagram is routed only to a registered session, and only after that address
//! was bound by a binding request naming it; at most 8 addresses stay bound per session; after
//! both sessions are removed, nothing is left.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sfu::fuzzing::{DemuxTable, Route, binding_request_ufrag, is_binding_success, is_nomination, is_stun};
use sfu::{ParticipantId, SessionKey, SessionRole};
use std::collections::HashMap;
use std::net::SocketAddr;

fn route(n: u64) -> Route {
    Route { worker: n as usize, session: SessionKey { participant: ParticipantId(n), role: SessionRole::Publisher } }
}

fuzz_target!(|data: &[u8]| {
    let mut table = DemuxTable::default();
    let (a, b) = (route(1), route(2));
    table.register("srvA".into(), a);
    table.register("srvB".into(), b);
    // Which session each address was last bound to by a binding request.
    let mut bound: HashMap<SocketAddr, Route> = HashMap::new();
    // Datagrams: [address index][length][bytes], repeated.
    let mut rest = data;
    while let [from, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (datagram, next) = tail.split_at(n);
        rest = next;
        let from = SocketAddr::from(([10, 0, 0, from % 16], 5000));

        let ufrag = binding_request_ufrag(datagram);
        if let Some(u) = ufrag {
            assert!(!u.is_empty() && !u.contains(':') && u.len() <= 513, "{u:?}");
            assert!(is_stun(datagram));
        }
        if is_nomination(datagram) || is_binding_success(datagram) {
            assert!(is_stun(datagram));
        }
        let got = table.route(from, datagram);
        match ufrag {
            Some("srvA") => {
                assert_eq!(got, Some(a));
                bound.insert(from, a);
            }
            Some("srvB") => {
                assert_eq!(got, Some(b));
                bound.insert(from, b);
            }
            _ => {
                if let Some(r) = got {
                    assert_eq!(bound.get(&from), Some(&r), "routed without a binding request naming it");
                }
            }
        }
        assert!(table.addresses() <= 16, "at most 8 addresses per session");
    }
    table.remove(a.session);
    table.remove(b.session);
    assert_eq!((table.sessions(), table.addresses()), (0, 0), "nothing left behind");
});
