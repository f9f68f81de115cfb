//! The publisher side: the client offers its tracks, we answer; each track it sends becomes one
//! of ours (with up to three simulcast encodings) and its packets go to the router.

use crate::error::SfuError;
use crate::ids::TrackId;
use crate::media::codec::Codec;
use crate::session::transport::{Transport, sdp_err};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use std::collections::HashMap;
use std::time::Instant;

/// One encoding of a published track (one simulcast layer, or the only one).
#[derive(Debug)]
pub struct PublishedLayer {
    pub layer: u8,
    pub ssrc: u32,
    pub last_pli: Option<Instant>,
    pub pli_pending: bool,
    pub packets: u64,
}

/// A track this session publishes.
#[derive(Debug)]
pub struct PublishedTrack {
    pub id: TrackId,
    pub codec: Codec,
    pub receiver_id: RTCRtpReceiverId,
    pub layers: Vec<PublishedLayer>,
}

impl PublishedTrack {
    pub fn layer_by_ssrc(&mut self, ssrc: u32) -> Option<&mut PublishedLayer> {
        self.layers.iter_mut().find(|l| l.ssrc == ssrc)
    }

    /// The encoding to ask a keyframe of for `layer` (the nearest one that exists).
    pub fn layer_for_keyframe(&mut self, layer: u8) -> Option<&mut PublishedLayer> {
        let best = self.layers.iter().min_by_key(|l| (l.layer as i16 - layer as i16).abs()).map(|l| l.layer)?;
        self.layers.iter_mut().find(|l| l.layer == best)
    }
}

pub struct Publisher {
    pub link: Transport,
    /// rtc's track id → our track.
    pub published: HashMap<String, PublishedTrack>,
}

impl Publisher {
    /// Apply the client's offer and return our answer.
    ///
    /// A refused offer leaves the connection as it was (JSEP rollback, RFC 9429 §5.7): a
    /// publisher whose renegotiation fails keeps publishing and can offer again.
    pub fn apply_offer(&mut self, now: Instant, sdp: String) -> Result<String, SfuError> {
        let result = self.try_apply_offer(now, sdp);
        if result.is_err() && self.link.pc.pending_remote_description().is_some() {
            let rolled_back = RTCSessionDescription::rollback(None).and_then(|rollback| self.link.pc.set_remote_description(now, rollback));
            if let Err(e) = rolled_back {
                tracing::warn!("rolling back a refused offer: {e}");
            }
        }
        result
    }

    fn try_apply_offer(&mut self, now: Instant, sdp: String) -> Result<String, SfuError> {
        let offer = RTCSessionDescription::offer(sdp).map_err(sdp_err)?;
        self.link.pc.set_remote_description(now, offer).map_err(sdp_err)?;
        self.link.ensure_candidate()?;
        let answer = self.link.pc.create_answer(None).map_err(sdp_err)?;
        self.link.pc.set_local_description(now, answer).map_err(sdp_err)?;
        // The answerer's restart takes the client's credentials with the offer: no early checks.
        self.link.note_local_description();
        self.link.pc.local_description().map(|d| d.sdp).ok_or_else(|| SfuError::BadSdp("no local description".into()))
    }
}
