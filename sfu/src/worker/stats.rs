//! A subscriber's figures for `stats` replies: estimate, path, and per track the layer, caps
//! and rates the forwarder works with.

use crate::api::{PathStats, SubscriberStats};
use crate::ids::ParticipantId;
use crate::worker::core::Core;

impl Core {
    pub fn subscriber_stats(&mut self, participant: ParticipantId) -> SubscriberStats {
        let Some(s) = self.subscriber(participant) else { return SubscriberStats::default() };
        SubscriberStats {
            bandwidth_bps: s.bandwidth_estimate().map(|b| b as u64),
            twcc_feedback: s.twcc_feedback(),
            audio_only: s.audio_only(),
            path: s.path_stats().map(|(q, loss, probes)| PathStats { queue_delay_ms: q.as_secs_f64() * 1000.0, loss, probes }),
            tracks: s.forwarders.values().map(|sub| sub.forwarder.stats()).collect(),
        }
    }
}
