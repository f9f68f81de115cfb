//! SRTP for RTP we send ourselves (issue 16's send path): the packet is encrypted in its own
//! buffer, in place, with the session keys rtc derived for the connection
//! (`session::srtp_keys`), for the two profiles rtc negotiates — AEAD_AES_128_GCM (RFC 7714)
//! and AES_CM_128_HMAC_SHA1_80 (RFC 3711). The ciphers are rtc's provider's (ring), keyed once.
//!
//! Each SSRC's rollover counter is the sender's to keep ([`RolloverCounter`]); the packet index
//! it makes with the sequence number goes into the nonce (GCM) or counter (CM) and, for CM,
//! the authenticated data.

use crate::session::srtp_keys::SrtpKeys;
use bytes::BytesMut;
use rtc::crypto::{AeadAlgorithm, AeadCipher, HmacAlgorithm, Mac, RTCCrypto, StreamCipher, StreamCipherAlgorithm};

/// Bytes an SRTP packet has beyond its RTP packet: GCM's tag, or HMAC-SHA1-80's.
pub const GCM_TAG: usize = 16;
pub const SHA1_80_TAG: usize = 10;

/// Why a packet could not be sealed.
#[derive(Debug, PartialEq, Eq)]
pub enum SealError {
    /// The header length given is past the packet's end.
    Header,
    /// The cipher refused (a provider error).
    Crypto,
}

enum Profile {
    Gcm { cipher: Box<dyn AeadCipher>, salt: [u8; 12] },
    CmSha1 { cipher: Box<dyn StreamCipher>, mac: Box<dyn Mac>, salt: [u8; 14] },
}

/// The RTP half of an SRTP context, sending side.
pub struct RtpSealer {
    profile: Profile,
}

impl RtpSealer {
    /// A sealer for `keys` (AES-128 profiles), with ciphers from `crypto`.
    pub fn new(keys: &SrtpKeys, crypto: &dyn RTCCrypto) -> Option<Self> {
        let profile = if keys.aead {
            let salt: [u8; 12] = keys.salt.as_slice().try_into().ok()?;
            Profile::Gcm { cipher: crypto.new_aead(AeadAlgorithm::Aes128Gcm, &keys.key).ok()?, salt }
        } else {
            let salt: [u8; 14] = keys.salt.as_slice().try_into().ok()?;
            let cipher = crypto.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &keys.key).ok()?;
            let mac = crypto.new_hmac(HmacAlgorithm::Sha1, &keys.auth).ok()?;
            Profile::CmSha1 { cipher, mac, salt }
        };
        Some(Self { profile })
    }

    /// The bytes [`seal`](Self::seal) appends.
    pub fn overhead(&self) -> usize {
        match self.profile {
            Profile::Gcm { .. } => GCM_TAG,
            Profile::CmSha1 { .. } => SHA1_80_TAG,
        }
    }

    /// Encrypt the RTP packet in `buf` — a header of `header_len` bytes (with its SSRC and
    /// sequence number as sent), then the payload — in place, and append the tag. `roc` is the
    /// SSRC's rollover counter for this packet.
    pub fn seal(&mut self, buf: &mut BytesMut, header_len: usize, roc: u32) -> Result<(), SealError> {
        if header_len < 12 || header_len > buf.len() {
            return Err(SealError::Header);
        }
        let ssrc = [buf[8], buf[9], buf[10], buf[11]];
        let seq = [buf[2], buf[3]];
        match &mut self.profile {
            Profile::Gcm { cipher, salt } => {
                // RFC 7714 §8.1: (00 00 ‖ SSRC ‖ ROC ‖ SEQ) XOR the salt.
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc);
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&seq);
                for (b, s) in iv.iter_mut().zip(salt.iter()) {
                    *b ^= s;
                }
                let mut tag = [0u8; GCM_TAG];
                let (header, payload) = buf.split_at_mut(header_len);
                cipher.seal_in_place(&iv, header, payload, &mut tag).map_err(|_| SealError::Crypto)?;
                buf.extend_from_slice(&tag);
            }
            Profile::CmSha1 { cipher, mac, salt } => {
                // RFC 3711 §4.1.1: (salt ‖ 00 00) XOR (SSRC << 64) XOR (index << 16).
                let mut iv = [0u8; 16];
                iv[..14].copy_from_slice(salt);
                for (b, x) in iv[4..8].iter_mut().zip(ssrc) {
                    *b ^= x;
                }
                for (b, x) in iv[8..12].iter_mut().zip(roc.to_be_bytes()) {
                    *b ^= x;
                }
                for (b, x) in iv[12..14].iter_mut().zip(seq) {
                    *b ^= x;
                }
                cipher.apply_keystream(&iv, &mut buf[header_len..]).map_err(|_| SealError::Crypto)?;
                // §4.2: HMAC-SHA1 over the packet and the ROC, the first 80 bits.
                let mut tag = [0u8; 20];
                mac.sign(&[&buf[..], &roc.to_be_bytes()], &mut tag).map_err(|_| SealError::Crypto)?;
                buf.extend_from_slice(&tag[..SHA1_80_TAG]);
            }
        }
        Ok(())
    }
}

/// One SSRC's rollover counter as its sender keeps it (RFC 3711 §3.3.1): it counts the
/// sequence number's wraps. A packet sent again (a retransmission under its own number) or late
/// belongs to the wrap it was first sent in.
#[derive(Clone, Copy, Debug, Default)]
pub struct RolloverCounter {
    last: Option<(u32, u16)>,
}

impl RolloverCounter {
    /// The ROC for a packet with sequence number `seq`, noting it as sent.
    pub fn next(&mut self, seq: u16) -> u32 {
        let Some((roc, last)) = self.last else {
            self.last = Some((0, seq));
            return 0;
        };
        let ahead = seq.wrapping_sub(last);
        if ahead == 0 {
            return roc;
        }
        if ahead < 0x8000 {
            // Newer: past the wrap if the number went down.
            let roc = if seq < last { roc.wrapping_add(1) } else { roc };
            self.last = Some((roc, seq));
            roc
        } else if seq > last {
            // Older, from before the last wrap.
            roc.wrapping_sub(1)
        } else {
            roc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::srtp_keys::KeyTap;
    use proptest::prelude::*;
    use rtc::shared::marshal::{Marshal, Unmarshal};
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    /// rtc's own context (the one a connection sends with) and a sealer from the keys the tap
    /// noted while rtc built it: every packet must come out byte for byte the same.
    fn pair(aead: bool, master_key: &[u8; 16], master_salt: &[u8]) -> (Context, RtpSealer) {
        let provider = rtc::crypto::default_provider().expect("ring");
        let tap = KeyTap::new(provider.clone());
        let profile = if aead { ProtectionProfile::AeadAes128Gcm } else { ProtectionProfile::Aes128CmHmacSha1_80 };
        let ours = Context::new(master_key, master_salt, profile, None, None, rtc::crypto::RTCCryptoProvider::crypto(&*tap))
            .expect("local context");
        // The remote context, built after it, must not change what was noted.
        let _remote = Context::new(&[7u8; 16], master_salt, profile, None, None, rtc::crypto::RTCCryptoProvider::crypto(&*tap))
            .expect("remote context");
        let keys = tap.local_keys().expect("the tap noted the local keys");
        let remote = tap.remote_master().expect("the tap noted the remote master");
        assert_eq!((remote.aead, &remote.key[..], &remote.salt[..]), (aead, &[7u8; 16][..], master_salt), "the remote master");
        assert_eq!(keys.aead, aead);
        assert_eq!(keys.salt.len(), if aead { 12 } else { 14 });
        assert_eq!(keys.auth.len(), if aead { 0 } else { 20 });
        let sealer = RtpSealer::new(&keys, provider.crypto()).expect("sealer");
        (ours, sealer)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn sealed_packets_are_rtcs_byte_for_byte(
            aead in any::<bool>(),
            master_key in any::<[u8; 16]>(),
            master_salt in any::<[u8; 14]>(),
            ssrc in any::<u32>(),
            start in any::<u16>(),
            packets in prop::collection::vec((1usize..1200, any::<bool>(), 0u16..3), 1..40),
        ) {
            let salt = if aead { &master_salt[..12] } else { &master_salt[..] };
            let (mut theirs, mut ours) = pair(aead, &master_key, salt);
            let mut roc = RolloverCounter::default();
            let mut seq = start;
            for (i, (len, marker, step)) in packets.into_iter().enumerate() {
                // Forward steps, some skipped numbers (a layer switch's gap) and wraps.
                seq = seq.wrapping_add(step.max(1));
                let header = rtc::rtp::header::Header {
                    version: 2,
                    marker,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: 3000u32.wrapping_mul(i as u32),
                    ssrc,
                    ..Default::default()
                };
                let payload: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
                let plain = rtc::rtp::Packet { header, payload: payload.into() }.marshal().expect("marshal");
                let expected = theirs.encrypt_rtp(&plain).expect("rtc encrypts");
                let mut buf = BytesMut::from(&plain[..]);
                ours.seal(&mut buf, 12, roc.next(seq)).expect("seal");
                prop_assert_eq!(&buf[..], &expected[..], "packet {} (seq {})", i, seq);
            }
        }
    }

    #[test]
    fn a_sealed_packet_opens_at_the_receiver_across_a_wrap() {
        let (_, mut sealer) = pair(true, &[3u8; 16], &[5u8; 12]);
        let mut rx = Context::new(
            &[3u8; 16],
            &[5u8; 12],
            ProtectionProfile::AeadAes128Gcm,
            None,
            None,
            rtc::crypto::default_provider().expect("ring").crypto(),
        )
        .expect("receiver");
        let mut roc = RolloverCounter::default();
        for seq in [65534u16, 65535, 0, 1] {
            let header = rtc::rtp::header::Header { version: 2, payload_type: 96, sequence_number: seq, ssrc: 42, ..Default::default() };
            let plain = rtc::rtp::Packet { header, payload: vec![seq as u8; 100].into() }.marshal().expect("marshal");
            let mut buf = BytesMut::from(&plain[..]);
            sealer.seal(&mut buf, 12, roc.next(seq)).expect("seal");
            let opened = rx.decrypt_rtp(&buf).expect("the receiver opens it");
            let pkt = rtc::rtp::Packet::unmarshal(&mut &opened[..]).expect("RTP");
            assert_eq!(pkt.header.sequence_number, seq);
            assert_eq!(&pkt.payload[..], &[seq as u8; 100][..]);
        }
        assert_eq!(sealer.seal(&mut BytesMut::from(&[0u8; 8][..]), 12, 0), Err(SealError::Header), "a header past the end is refused");
    }

    #[test]
    fn the_rollover_counter_follows_wraps_and_late_packets() {
        let mut r = RolloverCounter::default();
        assert_eq!(r.next(65000), 0);
        assert_eq!(r.next(65535), 0);
        assert_eq!(r.next(2), 1, "wrapped");
        assert_eq!(r.next(65534), 0, "a late packet from before the wrap");
        assert_eq!(r.next(2), 1, "the same packet again");
        assert_eq!(r.next(30000), 1);
        assert_eq!(r.next(62000), 1);
        assert_eq!(r.next(100), 2);
        assert_eq!(r.next(65000), 1, "less than half the numbers behind: from the wrap before");
    }
}
