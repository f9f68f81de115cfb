//! Small `Copy` identifiers. Their string forms (`PA_…`, `TR_…`) are what signaling shows
//! clients and what the SFU uses as WebRTC stream and track ids.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u64);

        impl $name {
            /// A fresh id, unique within this process.
            pub fn next() -> Self {
                static NEXT: AtomicU64 = AtomicU64::new(1);
                // Mix in a per-process random base so ids are not guessable across restarts.
                static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
                let base = *BASE.get_or_init(|| rand::random::<u64>() & 0x0000_ffff_ffff_0000);
                Self(base + NEXT.fetch_add(1, Ordering::Relaxed))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{:x}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = ();
            fn from_str(s: &str) -> Result<Self, ()> {
                let hex = s.strip_prefix($prefix).ok_or(())?;
                if hex.is_empty() || hex.len() > 16 {
                    return Err(());
                }
                u64::from_str_radix(hex, 16).map(Self).map_err(|_| ())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(|_| serde::de::Error::custom(concat!("not a ", $prefix, " id")))
            }
        }
    };
}

id_type!(
    /// A participant in a room (one WebSocket session).
    ParticipantId,
    "PA_"
);
id_type!(
    /// A published track (one audio or video source of one publisher).
    TrackId,
    "TR_"
);

/// Which of a participant's two peer connections a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionRole {
    /// Receives the participant's media; the client offers, the SFU answers.
    Publisher,
    /// Sends other participants' media; the SFU offers, the client answers.
    Subscriber,
}

/// One peer session: a participant and which of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub participant: ParticipantId,
    pub role: SessionRole,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_junk() {
        let t = TrackId::next();
        assert_eq!(t.to_string().parse::<TrackId>(), Ok(t));
        assert!("TR_".parse::<TrackId>().is_err());
        assert!("PA_12".parse::<TrackId>().is_err());
        assert!("TR_zz".parse::<TrackId>().is_err());
        assert!("TR_11111111111111111".parse::<TrackId>().is_err());
        assert_ne!(TrackId::next(), TrackId::next());
    }
}

/// The hasher of the maps the per-packet path looks ids up in (a viewer's forwarders, a
/// worker's participants and routing tables): two lookups per viewer per forwarded packet, each
/// a SipHash of ≈ 20 ns with std's default. The ids are drawn by this process, never chosen by a
/// client, so no defence against chosen keys is needed: one multiply by the golden ratio spreads
/// them over the table (its high bits, which hashbrown's tags use, as well as its low ones).
#[derive(Clone, Copy, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A map keyed by ids, with [`IdHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod hasher_tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_the_tags_and_buckets() {
        let hasher = BuildHasherDefault::<IdHasher>::default();
        let base = 0x1234_5678_0000u64;
        let hashes: Vec<u64> = (0..4096).map(|i| hasher.hash_one(TrackId(base + i))).collect();
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), hashes.len(), "no collisions");
        let tags: std::collections::HashSet<_> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128, "every 7-bit tag is used");
        let buckets: std::collections::HashSet<_> = hashes.iter().map(|h| h & 1023).collect();
        assert!(buckets.len() > 600, "low bits spread too: {}", buckets.len());
    }
}
