//! Media plane settings. Built by the binary's typed config and passed down explicitly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Everything the SFU needs to start.
#[derive(Clone, Debug)]
pub struct SfuConfig {
    /// Where the one UDP socket binds (port 0 picks a free port, as tests do).
    pub bind: SocketAddr,
    /// The address put in ICE candidates: 127.0.0.1 in tests, the public IP in production.
    /// Its port is the bound port.
    pub advertise_ip: IpAddr,
    /// Worker threads that drive sessions; 0 means one per core.
    pub workers: usize,
    /// At most one PLI per track per this interval toward a publisher.
    pub pli_throttle: Duration,
    /// A viewer who connects starts from the picture a layer is at when its keyframe arrived
    /// at most this long ago (forward/gop.rs), instead of asking the publisher for a new one;
    /// zero turns this off.
    pub keyframe_cache: Duration,
    /// Viewers' forwarded media takes the send path of our own (session/lean.rs: header
    /// written once, sealed in place, no interceptor chain) rather than rtc's.
    pub lean_send_path: bool,
    /// A session with no ICE connection after this long is dropped.
    pub connect_timeout: Duration,
    /// Capacity of each worker's command and media queue.
    pub queue_capacity: usize,
    /// Tracks one participant may publish.
    pub max_tracks_per_publisher: usize,
    /// How simulcast layers follow each viewer's bandwidth estimate.
    pub layers: crate::forward::selector::LayerPolicy,
    /// When a viewer whose path cannot carry the lowest layer falls back to audio only, and
    /// when it returns (the rule itself is on for every viewer unless
    /// [`Sfu::set_audio_only_fallback`](crate::Sfu::set_audio_only_fallback) turns it off).
    pub fallback: crate::forward::fallback::FallbackPolicy,
    /// Real-time scheduling (SCHED_RR at this priority, 1..=99) for the receive and worker
    /// threads; 0 = the default scheduler. Needs CAP_SYS_NICE (or an RLIMIT_RTPRIO); without
    /// it the threads say so once and run as usual.
    pub realtime_priority: u8,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7882),
            advertise_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            workers: 0,
            pli_throttle: Duration::from_millis(500),
            keyframe_cache: Duration::from_millis(500),
            lean_send_path: true,
            connect_timeout: Duration::from_secs(20),
            queue_capacity: 65_536,
            max_tracks_per_publisher: 8,
            layers: Default::default(),
            fallback: Default::default(),
            realtime_priority: 0,
        }
    }
}
