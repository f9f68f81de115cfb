//! The send path of our own for a viewer's forwarded media (issue 16; docs/architecture.md §9).
//!
//! rtc's path costs, per packet and viewer: the sender's parameters looked up (two lists
//! built), the packet walked through the interceptor chain (NACK responder's copy, sender
//! report counters, our guard and transport-wide number), marshalled into a new buffer,
//! encrypted by its SRTP context into another, queued and polled out. Here the header is
//! written once, straight into the datagram's buffer, in front of the payload; the transport
//! number comes from the log rtc's chain shares ([`SharedTwcc`]); the packet is sealed in place
//! with the session keys rtc derived ([`RtpSealer`]); the datagram goes into the worker's send
//! batch. rtc keeps ICE, DTLS, RTCP and everything else.
//!
//! What rtc's chain did for these packets is done here, per forwarded stream ([`LeanStream`]):
//! - **retransmissions**: a ring of the last [`HISTORY`] packets sent (the received packet,
//!   shared with every other viewer, and the four header fields rewritten for this one) answers
//!   the NACKs our guard lets through, as RTX (RFC 4588) when negotiated, else the packet again;
//! - **probes**: RTX copies of the latest packets, from the same ring, asked for by the guard's
//!   NACK with the viewer's next RTCP (`Subscriber::probe`);
//! - **sender reports**: packet and octet counts and the RTP/NTP mapping of the last frame, sent
//!   through rtc's RTCP path once a second.
//!
//! The datagrams are the ones rtc's path would send, byte for byte before encryption (the unit
//! tests below and `worker::sim`'s comparison of the two paths).

use crate::bwe::twcc::SharedTwcc;
use crate::media::packet::MediaPacket;
use crate::net::batch::SendBatch;
use crate::net::srtp::{RolloverCounter, RtpSealer};
use bytes::{BufMut, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets each forwarded video stream keeps to send again: ≥ 1 s of the top layer at
/// 2.5 Mbit/s (rtc's responder kept as many, as copies).
pub const HISTORY: usize = crate::session::NACK_HISTORY as usize;
/// How often each stream's sender report goes out (rtc's interval).
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Seconds from the NTP epoch (1900) to the Unix epoch.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// A one-byte-header extension block holding the transport-wide number: profile, length, one
/// element of two bytes, one byte of padding (RFC 8285 §4.2).
const TWCC_BLOCK: usize = 8;

/// The fields of a forwarded packet's header that differ per viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub ssrc: u32,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    /// The received packet said it was padded: rtc pads the forwarded one again (to a multiple
    /// of four bytes of payload, four when it already is one).
    pub padding: bool,
}

/// Bytes of padding rtc's marshalling adds after `payload_len` bytes of payload.
fn padding_len(head: &Head, payload_len: usize) -> usize {
    if !head.padding {
        return 0;
    }
    match payload_len % 4 {
        0 => 4,
        r => 4 - r,
    }
}

/// Write an RTP packet into `buf` as rtc's `Packet::marshal` writes it: the header (with a
/// transport-wide number when `twcc` names the extension id and number), `prefix` (an RTX
/// packet's original sequence number) and `payload`, then padding. Returns the header's length.
/// `buf` must have room for [`rtp_len`] bytes plus what the sealer appends, or it grows.
pub fn write_rtp(buf: &mut BytesMut, head: &Head, twcc: Option<(u8, u16)>, prefix: Option<u16>, payload: &[u8]) -> usize {
    let body = payload.len() + if prefix.is_some() { 2 } else { 0 };
    let pad = padding_len(head, body);
    let mut b0 = 0x80u8;
    if pad > 0 {
        b0 |= 0x20;
    }
    if twcc.is_some() {
        b0 |= 0x10;
    }
    buf.put_u8(b0);
    buf.put_u8(head.pt & 0x7f | if head.marker { 0x80 } else { 0 });
    buf.put_u16(head.seq);
    buf.put_u32(head.ts);
    buf.put_u32(head.ssrc);
    let mut header_len = 12;
    if let Some((id, number)) = twcc {
        buf.put_slice(&[0xbe, 0xde, 0x00, 0x01, (id << 4) | 1]);
        buf.put_u16(number);
        buf.put_u8(0);
        header_len += TWCC_BLOCK;
    }
    if let Some(osn) = prefix {
        buf.put_u16(osn);
    }
    buf.put_slice(payload);
    if pad > 0 {
        buf.put_bytes(0, pad - 1);
        buf.put_u8(pad as u8);
    }
    header_len
}

/// The length [`write_rtp`] writes.
pub fn rtp_len(head: &Head, twcc: bool, prefix: bool, payload_len: usize) -> usize {
    let body = payload_len + if prefix { 2 } else { 0 };
    12 + if twcc { TWCC_BLOCK } else { 0 } + body + padding_len(head, body)
}

/// Where a packet goes: the worker's send batch, the viewer's address, the time it leaves.
pub struct Wire<'a> {
    pub out: &'a mut SendBatch,
    pub to: SocketAddr,
    pub now: Instant,
}

/// A viewer session's half of the path: its keys and transport-wide numbers.
pub struct LeanSender {
    sealer: RtpSealer,
    twcc: SharedTwcc,
    /// The wall clock at an instant of the worker's clock: sender reports' NTP time.
    wall: (Instant, SystemTime),
    /// When the next sender reports are due.
    next_report: Instant,
}

impl std::fmt::Debug for LeanSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanSender").field("overhead", &self.sealer.overhead()).finish_non_exhaustive()
    }
}

impl LeanSender {
    pub fn new(sealer: RtpSealer, twcc: SharedTwcc, now: Instant) -> Self {
        Self { sealer, twcc, wall: (now, SystemTime::now()), next_report: now + REPORT_INTERVAL }
    }

    /// Write, number, seal and queue one packet to `to`. False if it could not be sealed.
    fn emit(&mut self, wire: &mut Wire, head: &Head, twcc_ext: Option<u8>, prefix: Option<u16>, payload: &[u8], roc: u32) -> bool {
        let len = rtp_len(head, twcc_ext.is_some(), prefix.is_some(), payload.len());
        let twcc = twcc_ext.map(|id| (id, self.twcc.lock().number(len, wire.now)));
        let mut buf = wire.out.buffer(len + self.sealer.overhead());
        let header_len = write_rtp(&mut buf, head, twcc, prefix, payload);
        match self.sealer.seal(&mut buf, header_len, roc) {
            Ok(()) => {
                wire.out.push(wire.to, buf);
                true
            }
            Err(e) => {
                tracing::debug!(?e, ssrc = head.ssrc, "sealing failed");
                false
            }
        }
    }

    /// NTP time (RFC 3550 §4: seconds since 1900, 32.32 fixed point) of `now`.
    fn ntp(&self, now: Instant) -> u64 {
        let wall = self.wall.1 + now.saturating_duration_since(self.wall.0);
        let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since_unix.as_secs() + NTP_UNIX_OFFSET;
        let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }

    /// Whether sender reports are due at `now` (then the next are due an interval later).
    pub fn reports_due(&mut self, now: Instant) -> bool {
        if now < self.next_report {
            return false;
        }
        self.next_report = now + REPORT_INTERVAL;
        true
    }
}

/// A packet kept for retransmission: the received packet and this viewer's header fields.
#[derive(Clone)]
struct Kept {
    head: Head,
    pkt: Arc<MediaPacket>,
}

/// One forwarded stream's state on the lean path.
#[derive(Default)]
pub struct LeanStream {
    roc: RolloverCounter,
    /// The transport-wide extension's id on this stream's m-line (none: not negotiated).
    pub twcc_ext: Option<u8>,
    /// RTX (RFC 4588): the SSRC and payload type retransmissions go out under, when the viewer
    /// accepted RTX for the stream's codec.
    pub rtx: Option<(u32, u8)>,
    rtx_seq: u16,
    rtx_roc: RolloverCounter,
    /// The last [`HISTORY`] packets sent, by sequence number (video only; made at the first).
    history: Option<Box<[Option<Kept>]>>,
    packets: u32,
    octets: u32,
    /// The RTP timestamp of the latest frame sent and when its first packet left.
    last_frame: Option<(u32, Instant)>,
    clock_rate: u32,
}

impl std::fmt::Debug for LeanStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanStream")
            .field("twcc_ext", &self.twcc_ext)
            .field("rtx", &self.rtx)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl LeanStream {
    /// Send `pkt` under `head`; kept for retransmission when `keep` (video).
    pub fn send(
        &mut self,
        sender: &mut LeanSender,
        wire: &mut Wire,
        head: Head,
        pkt: &Arc<MediaPacket>,
        keep: bool,
        clock_rate: u32,
    ) -> bool {
        let now = wire.now;
        let roc = self.roc.next(head.seq);
        if !sender.emit(wire, &head, self.twcc_ext, None, &pkt.payload, roc) {
            return false;
        }
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(pkt.payload.len() as u32);
        self.clock_rate = clock_rate;
        // The RTP/NTP mapping follows the newest frame's first packet (as rtc's reports do).
        if self.last_frame.is_none_or(|(ts, _)| ts != head.ts && head.ts.wrapping_sub(ts) < 1 << 31) {
            self.last_frame = Some((head.ts, now));
        }
        if keep {
            let history = self.history.get_or_insert_with(|| vec![None; HISTORY].into_boxed_slice());
            history[head.seq as usize % HISTORY] = Some(Kept { head, pkt: pkt.clone() });
        }
        true
    }

    /// Send again the packet this stream sent as `seq`, if it is still kept: as RTX when
    /// negotiated, else as it was. Returns the bytes sent (0: not kept).
    pub fn resend(&mut self, sender: &mut LeanSender, wire: &mut Wire, seq: u16) -> usize {
        let Some(kept) = self.history.as_ref().and_then(|h| h[seq as usize % HISTORY].as_ref()).filter(|k| k.head.seq == seq) else {
            return 0;
        };
        let (head, pkt) = (kept.head, kept.pkt.clone());
        let sent = match self.rtx {
            Some((ssrc, pt)) => {
                let rtx = Head { ssrc, pt, seq: self.rtx_seq, ts: head.ts, marker: head.marker, padding: false };
                self.rtx_seq = self.rtx_seq.wrapping_add(1);
                let roc = self.rtx_roc.next(rtx.seq);
                sender.emit(wire, &rtx, self.twcc_ext, Some(head.seq), &pkt.payload, roc).then_some(pkt.payload.len() + 2)
            }
            None => {
                // Sent again on the media SSRC: counted in its sender reports (RFC 3550 §6.4.1).
                let roc = self.roc.next(head.seq);
                let sent = sender.emit(wire, &head, self.twcc_ext, None, &pkt.payload, roc);
                if sent {
                    self.packets = self.packets.wrapping_add(1);
                    self.octets = self.octets.wrapping_add(pkt.payload.len() as u32);
                }
                sent.then_some(pkt.payload.len())
            }
        };
        sent.unwrap_or(0)
    }

    /// Whether `seq` is kept (a probe may resend it).
    pub fn has(&self, seq: u16) -> bool {
        self.history.as_ref().and_then(|h| h[seq as usize % HISTORY].as_ref()).is_some_and(|k| k.head.seq == seq)
    }

    /// This stream's sender report at `now`, once it has sent anything.
    pub fn report(&self, sender: &LeanSender, ssrc: u32, now: Instant) -> Option<rtc::rtcp::sender_report::SenderReport> {
        let (ts, at) = self.last_frame?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64() * f64::from(self.clock_rate);
        Some(rtc::rtcp::sender_report::SenderReport {
            ssrc,
            ntp_time: sender.ntp(now),
            rtp_time: ts.wrapping_add(elapsed as u32),
            packet_count: self.packets,
            octet_count: self.octets,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Marshal;

    /// rtc's marshalling of the same packet, as its path sends it (before SRTP).
    fn rtcs(head: &Head, twcc: Option<(u8, u16)>, prefix: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some(p) = prefix {
            body.extend_from_slice(&p.to_be_bytes());
        }
        body.extend_from_slice(payload);
        let mut p = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                padding: head.padding,
                marker: head.marker,
                payload_type: head.pt,
                sequence_number: head.seq,
                timestamp: head.ts,
                ssrc: head.ssrc,
                ..Default::default()
            },
            payload: body.into(),
        };
        if let Some((id, n)) = twcc {
            let ext = rtc::rtp::extension::transport_cc_extension::TransportCcExtension { transport_sequence: n };
            p.header.set_extension(id, ext.marshal().unwrap().freeze()).unwrap();
        }
        p.marshal().unwrap().to_vec()
    }

    #[test]
    fn packets_are_written_as_rtc_marshals_them() {
        for padding in [false, true] {
            for twcc in [None, Some((3u8, 0u16)), Some((14, 0xfffe))] {
                for prefix in [None, Some(0x1234u16)] {
                    for len in [0usize, 1, 2, 3, 4, 5, 1100] {
                        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                        let head = Head { ssrc: 0xdead_beef, pt: 96, seq: 65_535, ts: 0x0102_0304, marker: len % 2 == 1, padding };
                        let mut buf = BytesMut::new();
                        let header_len = write_rtp(&mut buf, &head, twcc, prefix, &payload);
                        let want = rtcs(&head, twcc, prefix, &payload);
                        assert_eq!(&buf[..], &want[..], "{head:?} twcc {twcc:?} prefix {prefix:?} len {len}");
                        assert_eq!(buf.len(), rtp_len(&head, twcc.is_some(), prefix.is_some(), len));
                        assert_eq!(header_len, if twcc.is_some() { 20 } else { 12 });
                    }
                }
            }
        }
    }

    fn sender() -> LeanSender {
        let keys = crate::session::srtp_keys::SrtpKeys { aead: true, key: vec![7; 16], salt: vec![9; 12], auth: Vec::new() };
        let provider = rtc::crypto::default_provider().unwrap();
        let sealer = RtpSealer::new(&keys, provider.crypto()).unwrap();
        LeanSender::new(sealer, SharedTwcc::default(), Instant::now())
    }

    fn packet(seq: u16) -> Arc<MediaPacket> {
        let header = rtc::rtp::header::Header { version: 2, sequence_number: seq, ..Default::default() };
        Arc::new(MediaPacket::inspect(
            crate::ids::TrackId(1),
            0,
            crate::media::codec::Codec::Vp8,
            header,
            vec![0u8; 100].into(),
            Instant::now(),
        ))
    }

    /// The history holds the last HISTORY packets: one older is not sent again (it is gone, not
    /// another packet in its slot), the oldest kept is; RTX numbers its own stream; without
    /// RTX the packet goes again as it was; the transport-wide number counts every send.
    #[test]
    fn a_nack_past_the_history_is_not_answered() {
        let mut sender = sender();
        let mut out = SendBatch::default();
        let to: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mut stream = LeanStream { twcc_ext: Some(3), rtx: Some((0xabcd, 97)), ..Default::default() };
        let now = Instant::now();
        let n = HISTORY as u16 + 44;
        for seq in 0..n {
            let head = Head { ssrc: 1, pt: 96, seq, ts: 3000 * u32::from(seq), marker: false, padding: false };
            assert!(stream.send(&mut sender, &mut Wire { out: &mut out, to, now }, head, &packet(seq), true, 90_000));
        }
        let mut wire = Wire { out: &mut out, to, now };
        assert_eq!(stream.resend(&mut sender, &mut wire, 43), 0, "older than the history");
        assert!(!stream.has(43));
        assert_eq!(stream.resend(&mut sender, &mut wire, 44), 102, "the oldest kept: RTX, with its original number in front");
        assert_eq!(stream.resend(&mut sender, &mut wire, n), 0, "never sent");
        stream.rtx = None;
        assert_eq!(stream.resend(&mut sender, &mut wire, n - 1), 100, "no RTX: the packet as it was");
        assert_eq!(out.len(), n as usize + 2);
        assert_eq!(sender.twcc.lock().number(0, now), n + 2, "every datagram numbered");
        let sr = stream.report(&sender, 1, now).unwrap();
        // The media SSRC's count: the packet sent again on it counts, the RTX one does not.
        assert_eq!((sr.packet_count, sr.octet_count), (u32::from(n) + 1, 100 * (u32::from(n) + 1)));
    }
}
