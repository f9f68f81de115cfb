//! The machine's floor: the CPU per packet of a loop that does only what no SFU can skip when it
//! forwards one stream to N viewers — write each viewer's RTP header, copy the payload next to
//! it, SRTP-encrypt it with that viewer's own key (AEAD_AES_128_GCM, the profile our peers
//! negotiate first, RFC 7714) and hand it to the kernel, batched with `sendmmsg(2)`, and in the
//! GSO variant with one message per viewer per frame (`UDP_SEGMENT`). No reading, no routing, no
//! feedback, no estimation: a bound below any SFU on the same machine and the same path, which
//! `onair-loadtest compare` runs beside Janus and Onair so their figures can be read as a ratio
//! to it (machines here change from run to run; ratios in one run do not).
//!
//! The stream is the one `compare`'s publisher sends: a frame every 33.3 ms of `video_kbps`
//! split into ≤ 1100-byte packets, and an audio packet of 120 bytes every 20 ms.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// RTP header as an SFU sends it: 12 bytes and one-byte extensions (transport-wide sequence
/// number and padding): 20 bytes.
const HEADER: usize = 20;
const TAG: usize = 16;
const MAX_PAYLOAD: usize = 1100;
/// Messages per `sendmmsg` call (the SFU's batch is 64 too).
const BATCH: usize = 64;
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;
const TWCC_ID: u8 = 3;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloorSpec {
    pub bind: SocketAddr,
    pub dests: Vec<SocketAddr>,
    pub video_kbps: u32,
    /// Measured after `warmup`, for this long.
    pub duration: Duration,
    pub warmup: Duration,
    /// One message per viewer per frame with `UDP_SEGMENT` (its packets are equal-sized but for
    /// the last), instead of one message per packet.
    pub gso: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloorResult {
    pub gso: bool,
    pub viewers: usize,
    /// Datagrams the kernel took in the measured window.
    pub packets: u64,
    pub packets_per_s: f64,
    /// Process CPU (user + system) in the window.
    pub cpu_secs: f64,
    pub cpu_us_per_packet: f64,
    /// `sendmmsg` calls that failed (e.g. GSO refused), in the window.
    pub send_errors: u64,
}

/// One viewer's SRTP state: its key and salt (random: the floor never derives them, an SFU does
/// that once per session), SSRC, sequence and rollover counter, and where it is.
struct Viewer {
    key: LessSafeKey,
    salt: [u8; 12],
    ssrc: [u32; 2],
    seq: [u16; 2],
    roc: [u32; 2],
    twcc: u16,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
}

impl Viewer {
    fn new(to: SocketAddr) -> anyhow::Result<Self> {
        let key: [u8; 16] = rand::random();
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).map_err(|_| anyhow::anyhow!("AES-128-GCM key"))?);
        let (addr, addr_len) = sockaddr(to);
        Ok(Self { key, salt: rand::random(), ssrc: rand::random(), seq: rand::random(), roc: [0; 2], twcc: 0, addr, addr_len })
    }

    /// Write packet `m` (0 video, 1 audio) of this viewer into `out`: header, payload, then
    /// encrypt the payload in place and append the tag. Returns the datagram's length.
    fn seal(&mut self, m: usize, marker: bool, timestamp: u32, payload: &[u8], out: &mut [u8]) -> usize {
        let (seq, roc) = (self.seq[m], self.roc[m]);
        self.seq[m] = seq.wrapping_add(1);
        if self.seq[m] == 0 {
            self.roc[m] = roc.wrapping_add(1);
        }
        self.twcc = self.twcc.wrapping_add(1);
        let h = &mut out[..HEADER];
        h[0] = 0x90; // V=2, X=1
        h[1] = if m == 0 { VIDEO_PT } else { AUDIO_PT } | if marker { 0x80 } else { 0 };
        h[2..4].copy_from_slice(&seq.to_be_bytes());
        h[4..8].copy_from_slice(&timestamp.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc[m].to_be_bytes());
        h[12..16].copy_from_slice(&[0xbe, 0xde, 0x00, 0x01]);
        h[16] = (TWCC_ID << 4) | 1;
        h[17..19].copy_from_slice(&self.twcc.to_be_bytes());
        h[19] = 0;
        let end = HEADER + payload.len();
        out[HEADER..end].copy_from_slice(payload);
        // RFC 7714 §8.1: IV = (0x0000 ‖ SSRC ‖ ROC ‖ SEQ) XOR salt.
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&self.ssrc[m].to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        let (header, rest) = out.split_at_mut(HEADER);
        let body = &mut rest[..payload.len()];
        match self.key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(&header[..]), body) {
            Ok(tag) => {
                out[end..end + TAG].copy_from_slice(tag.as_ref());
                end + TAG
            }
            // Only a payload past GCM's 64 GiB limit fails; ours are ≤ 1100 bytes.
            Err(_) => 0,
        }
    }
}

fn sockaddr(to: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid (empty) value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = sfu::write_sockaddr(&to, &mut ss);
    (ss, len)
}

/// Messages waiting for one `sendmmsg`: where each one's bytes sit in the arena, and for GSO its
/// segment size.
struct Batch {
    arena: Vec<u8>,
    used: usize,
    msgs: Vec<(usize, usize, usize, u16)>, // (viewer, offset, len, segment size or 0)
}

impl Batch {
    fn new(bytes_per_msg: usize) -> Self {
        Self { arena: vec![0; bytes_per_msg * BATCH], used: 0, msgs: Vec::with_capacity(BATCH) }
    }

    /// Hand the batch to the kernel; returns (datagrams taken, failed calls).
    fn flush(&mut self, fd: i32, viewers: &[Viewer]) -> (u64, u64) {
        let n = self.msgs.len();
        if n == 0 {
            return (0, 0);
        }
        const CMSG_SPACE: usize = 32;
        let mut iovs: Vec<libc::iovec> = Vec::with_capacity(n);
        let mut cmsgs = vec![[0u8; CMSG_SPACE]; n];
        // SAFETY: an all-zero mmsghdr is a valid, empty value.
        let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        let base = self.arena.as_mut_ptr();
        for (i, &(v, off, len, seg)) in self.msgs.iter().enumerate() {
            // SAFETY: off + len ≤ used ≤ arena.len(): the iovec points inside the arena, which
            // outlives the sendmmsg call below.
            iovs.push(libc::iovec { iov_base: unsafe { base.add(off) } as *mut libc::c_void, iov_len: len });
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = &viewers[v].addr as *const _ as *mut libc::c_void;
            h.msg_namelen = viewers[v].addr_len;
            if seg > 0 {
                let c = cmsgs[i].as_mut_ptr();
                // SAFETY: the buffer holds CMSG_SPACE(2) bytes (≤ 32) for one cmsghdr with a u16.
                unsafe {
                    let cm = c as *mut libc::cmsghdr;
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(cm) as *mut u16, seg);
                    h.msg_control = c as *mut libc::c_void;
                    h.msg_controllen = libc::CMSG_SPACE(2) as _;
                }
            }
        }
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let (mut datagrams, mut errors, mut at) = (0u64, 0u64, 0usize);
        // Bounded: each pass sends at least one message or skips one.
        while at < n {
            // SAFETY: hdrs[at..n] are initialised and point at live iovecs, addresses and cmsgs.
            let r = unsafe { libc::sendmmsg(fd, hdrs[at..].as_mut_ptr(), (n - at) as libc::c_uint, 0) };
            if r <= 0 {
                errors += 1;
                at += 1;
                continue;
            }
            for &(_, _, len, seg) in &self.msgs[at..at + r as usize] {
                datagrams += if seg > 0 { len.div_ceil(seg as usize) as u64 } else { 1 };
            }
            at += r as usize;
        }
        self.msgs.clear();
        self.used = 0;
        (datagrams, errors)
    }
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Send the stream to every destination for `warmup + duration`; measure the second part.
pub fn run(spec: &FloorSpec) -> anyhow::Result<FloorResult> {
    anyhow::ensure!(!spec.dests.is_empty(), "no destinations");
    let socket = UdpSocket::bind(spec.bind)?;
    let fd = socket.as_raw_fd();
    let mut viewers = spec.dests.iter().map(|d| Viewer::new(*d)).collect::<anyhow::Result<Vec<_>>>()?;
    let frame_bytes = (spec.video_kbps as usize * 1000 / 8 / 30).max(1);
    let n = frame_bytes.div_ceil(MAX_PAYLOAD).max(1);
    let video: Vec<u8> = (0..(frame_bytes / n).max(40)).map(|i| i as u8).collect();
    let audio: Vec<u8> = (0..120).map(|i| (i * 7) as u8).collect();
    let slot = HEADER + video.len() + TAG;
    let mut batch = Batch::new(if spec.gso { slot * n } else { slot });

    let start = Instant::now();
    let end = start + spec.warmup + spec.duration;
    let (mut next_video, mut next_audio) = (start, start);
    let (mut ts_video, mut ts_audio) = (0u32, 0u32);
    let mut window: Option<(Instant, f64)> = None;
    let (mut packets, mut errors) = (0u64, 0u64);
    // Bounded by `end`: every pass sleeps until the next frame or audio packet is due.
    while Instant::now() < end {
        let now = Instant::now();
        if window.is_none() && now >= start + spec.warmup {
            window = Some((now, cpu_secs()));
            (packets, errors) = (0, 0);
        }
        if now >= next_video {
            next_video += Duration::from_micros(33_333);
            ts_video = ts_video.wrapping_add(3000);
            for v in 0..viewers.len() {
                if spec.gso {
                    // The frame's packets back to back, all `slot` bytes: one message.
                    let off = batch.used;
                    for i in 0..n {
                        let at = off + i * slot;
                        let len = viewers[v].seal(0, i + 1 == n, ts_video, &video, &mut batch.arena[at..at + slot]);
                        debug_assert_eq!(len, slot);
                    }
                    batch.used += n * slot;
                    batch.msgs.push((v, off, n * slot, if n > 1 { slot as u16 } else { 0 }));
                    if batch.msgs.len() == BATCH {
                        let (p, e) = batch.flush(fd, &viewers);
                        (packets, errors) = (packets + p, errors + e);
                    }
                } else {
                    for i in 0..n {
                        let off = batch.used;
                        let len = viewers[v].seal(0, i + 1 == n, ts_video, &video, &mut batch.arena[off..off + slot]);
                        batch.used += slot;
                        batch.msgs.push((v, off, len, 0));
                        if batch.msgs.len() == BATCH {
                            let (p, e) = batch.flush(fd, &viewers);
                            (packets, errors) = (packets + p, errors + e);
                        }
                    }
                }
            }
            let (p, e) = batch.flush(fd, &viewers);
            (packets, errors) = (packets + p, errors + e);
        }
        if now >= next_audio {
            next_audio += Duration::from_millis(20);
            ts_audio = ts_audio.wrapping_add(960);
            for v in 0..viewers.len() {
                let off = batch.used;
                let len = viewers[v].seal(1, false, ts_audio, &audio, &mut batch.arena[off..off + slot]);
                batch.used += slot;
                batch.msgs.push((v, off, len, 0));
                if batch.msgs.len() == BATCH || batch.used + slot > batch.arena.len() {
                    let (p, e) = batch.flush(fd, &viewers);
                    (packets, errors) = (packets + p, errors + e);
                }
            }
            let (p, e) = batch.flush(fd, &viewers);
            (packets, errors) = (packets + p, errors + e);
        }
        let due = next_video.min(next_audio).min(end);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let (began, cpu0) = window.ok_or_else(|| anyhow::anyhow!("the run ended before its warm-up"))?;
    let wall = began.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    Ok(FloorResult {
        gso: spec.gso,
        viewers: viewers.len(),
        packets,
        packets_per_s: packets as f64 / wall,
        cpu_secs: cpu,
        cpu_us_per_packet: if packets > 0 { cpu * 1e6 / packets as f64 } else { f64::NAN },
        send_errors: errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    /// What the floor sends is real SRTP: the receiver, holding the viewer's key and salt,
    /// opens it to the payload that went in, and a changed byte fails to open.
    #[test]
    fn sealed_packets_open_with_the_viewers_key() {
        let key: [u8; 16] = [7; 16];
        let mut v = Viewer::new("127.0.0.1:9".parse().unwrap()).unwrap();
        v.key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).unwrap());
        v.seq[0] = u16::MAX; // the next packet wraps: the ROC moves on
        let payload: Vec<u8> = (0..300).map(|i| i as u8).collect();
        let mut out = vec![0u8; HEADER + payload.len() + TAG];
        for round in 0..2u32 {
            let len = v.seal(0, true, 1234, &payload, &mut out);
            assert_eq!(len, out.len());
            assert_ne!(&out[HEADER..HEADER + payload.len()], &payload[..], "the payload is encrypted");
            let seq = u16::from_be_bytes([out[2], out[3]]);
            assert_eq!((seq, v.roc[0]), (if round == 0 { u16::MAX } else { 0 }, 1));
            let mut iv = [0u8; 12];
            iv[2..6].copy_from_slice(&out[8..12]);
            iv[6..10].copy_from_slice(&(if round == 0 { 0u32 } else { 1 }).to_be_bytes());
            iv[10..12].copy_from_slice(&seq.to_be_bytes());
            for (b, s) in iv.iter_mut().zip(v.salt) {
                *b ^= s;
            }
            let opener = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).unwrap());
            let (header, body) = out.split_at(HEADER);
            let mut sealed = body.to_vec();
            let mut broken = sealed.clone();
            let plain = opener.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(header), &mut sealed).unwrap();
            assert_eq!(plain, &payload[..]);
            broken[5] ^= 1;
            assert!(opener.open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(header), &mut broken).is_err());
        }
    }

    /// A short run on loopback: every datagram of both variants reaches its socket, sized as
    /// sent (GSO splits a frame back into its packets).
    #[test]
    fn both_variants_reach_every_destination() {
        for gso in [false, true] {
            let sinks: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            for s in &sinks {
                s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            }
            let spec = FloorSpec {
                bind: "127.0.0.1:0".parse().unwrap(),
                dests: sinks.iter().map(|s| s.local_addr().unwrap()).collect(),
                video_kbps: 1500,
                duration: Duration::from_millis(300),
                warmup: Duration::from_millis(100),
                gso,
            };
            let r = run(&spec).unwrap();
            assert_eq!(r.send_errors, 0, "gso {gso}");
            assert!(r.packets > 0 && r.cpu_us_per_packet.is_finite());
            let mut buf = [0u8; 2048];
            for s in &sinks {
                let (mut video, mut audio) = (0, 0);
                while let Ok(len) = s.recv(&mut buf) {
                    match len {
                        1077 => video += 1, // 20 + 1041 + 16
                        156 => audio += 1,  // 20 + 120 + 16
                        other => panic!("a datagram of {other} bytes (gso {gso})"),
                    }
                }
                // 400 ms: 12–13 frames of 6 packets, 20–21 audio packets.
                assert!((66..=84).contains(&video) && (18..=22).contains(&audio), "gso {gso}: {video} video, {audio} audio");
            }
        }
    }
}
