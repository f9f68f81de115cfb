//! The cascade in the worker (the wire is `crate::relay`). On the origin a relay leg is one more
//! consumer of a published track: `route` seals each packet of a layer the leg wants into the
//! send batch, and the leg's wanted layer counts in the track's dynacast demand. On the edge a
//! leg feeds an ingest-like track: its datagrams pass the replay window, are opened and routed;
//! its viewers' keyframe requests and layer demand become events for signaling to send back.

use crate::api::{CodecInfo, MediaKind, SfuEvent, TrackInfo};
use crate::error::SfuError;
use crate::ids::{ParticipantId, TrackId};
use crate::media::packet::MediaPacket;
use crate::net::demux::DemuxCtl;
use crate::relay::{self, RelayKey, RelayStats, ReplayWindow};
use crate::worker::core::Core;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Origin side: one track toward one edge.
#[derive(Debug)]
pub struct RelayOut {
    pub leg: u32,
    /// The edge's media address.
    pub to: SocketAddr,
    pub key: Arc<RelayKey>,
    /// Layers above this one are not relayed (the edge's viewers do not want them).
    pub max_layer: u8,
    pub stats: Arc<RelayStats>,
    /// Datagrams sealed so far (the next one's sequence number is this + 1).
    pub(crate) seq: u64,
}

impl RelayOut {
    pub fn new(leg: u32, to: SocketAddr, key: &[u8; 16], max_layer: u8, stats: Arc<RelayStats>) -> RelayOut {
        RelayOut { leg, to, key: Arc::new(RelayKey::new(key)), max_layer, stats, seq: 0 }
    }
}

/// Edge side: a relayed track as signaling opens it. `track` is the origin's id, kept so the
/// ids viewers see are the same on every node.
#[derive(Debug)]
pub struct RelayTrack {
    pub track: TrackId,
    pub kind: MediaKind,
    pub codec: CodecInfo,
    /// Simulcast layers the origin's publisher sends (1 without simulcast).
    pub layers: u8,
    pub leg: u32,
    pub key: [u8; 16],
    pub stats: Arc<RelayStats>,
}

/// A change to a track's relay legs, for the origin worker that owns the track.
#[derive(Debug)]
pub(crate) enum RelayCtl {
    Start(TrackId, RelayOut),
    Layers(TrackId, u32, u8),
    Stop(TrackId, u32),
}

/// Edge side: one leg's state on the worker of its relay participant.
pub(crate) struct RelayIn {
    pub participant: ParticipantId,
    pub track: TrackId,
    pub key: RelayKey,
    pub window: ReplayWindow,
    pub layers: u8,
    pub stats: Arc<RelayStats>,
    /// When signaling was last asked for a keyframe, per layer (the last slot: all layers).
    pub keyframe_asked: [Option<Instant>; 4],
}

impl Core {
    /// Origin: seal `pkt` for every leg of its track that wants its layer.
    pub(crate) fn relay_packet(&mut self, pkt: &MediaPacket, now: Instant) {
        let Some(published) = self.router.published.get_mut(&pkt.track) else { return };
        if published.relays.is_empty() {
            return;
        }
        let origin_us = relay::unix_us(pkt.received, now);
        for r in published.relays.iter_mut().filter(|r| pkt.layer <= r.max_layer) {
            r.seq += 1;
            match relay::seal(&r.key, r.leg, r.seq, origin_us, pkt) {
                Ok(d) => {
                    r.stats.packets.fetch_add(1, Ordering::Relaxed);
                    r.stats.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    self.out.transmit.push(r.to, d);
                }
                Err(e) => {
                    r.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(track = %pkt.track, leg = r.leg, "not relayed: {e}");
                }
            }
        }
    }

    /// Origin: a leg starts, changes its layers or stops.
    pub(crate) fn relay_ctl(&mut self, ctl: RelayCtl, now: Instant) {
        match ctl {
            RelayCtl::Start(track, out) => {
                let Some(p) = self.router.published.get_mut(&track) else { return };
                p.relays.retain(|r| r.leg != out.leg);
                tracing::info!(%track, leg = out.leg, to = %out.to, max_layer = out.max_layer, "relay leg started");
                p.relays.push(out);
                self.demand_changed(track, now);
                // The edge's viewers start from a keyframe.
                self.keyframe_request(track, crate::worker::keyframes::ALL_LAYERS, now);
            }
            RelayCtl::Layers(track, leg, layer) => {
                let Some(p) = self.router.published.get_mut(&track) else { return };
                let Some(r) = p.relays.iter_mut().find(|r| r.leg == leg) else { return };
                let rising = layer > r.max_layer;
                r.max_layer = layer;
                self.demand_changed(track, now);
                if rising {
                    self.keyframe_request(track, layer, now);
                }
            }
            RelayCtl::Stop(track, leg) => {
                let Some(p) = self.router.published.get_mut(&track) else { return };
                p.relays.retain(|r| r.leg != leg);
                tracing::info!(%track, leg, "relay leg stopped");
                self.demand_changed(track, now);
            }
        }
    }

    /// Edge: publish relayed tracks for `participant` (which must be here), each fed by its leg.
    pub(crate) fn open_relay(
        &mut self,
        participant: ParticipantId,
        tracks: Vec<RelayTrack>,
        _now: Instant,
    ) -> Result<Vec<TrackInfo>, SfuError> {
        let max = self.plane.config.max_tracks_per_publisher;
        let state = self.participants.get_mut(&participant).ok_or(SfuError::NoSession)?;
        if state.ingest.len() + tracks.len() > max {
            return Err(SfuError::Limit("too many tracks for one publisher"));
        }
        for t in &tracks {
            if self.plane.tracks.contains_key(&t.track) || self.relay_in.contains_key(&t.leg) {
                return Err(SfuError::Limit("relay leg or track already open"));
            }
            if t.layers == 0 || usize::from(t.layers) > crate::media::simulcast::MAX_LAYERS {
                return Err(SfuError::Limit("relayed track layers out of range"));
            }
        }
        let mut infos = Vec::with_capacity(tracks.len());
        for t in tracks {
            state.ingest.push(t.track);
            self.relayed.insert(t.track, t.leg);
            self.relay_in.insert(
                t.leg,
                RelayIn {
                    participant,
                    track: t.track,
                    key: RelayKey::new(&t.key),
                    window: ReplayWindow::default(),
                    layers: t.layers,
                    stats: t.stats,
                    keyframe_asked: [None; 4],
                },
            );
            self.out.demux.push(DemuxCtl::Relay(t.leg, Some(self.idx)));
            infos.push(TrackInfo { id: t.track, publisher: participant, kind: t.kind, codec: t.codec });
        }
        for info in &infos {
            tracing::info!(%participant, track = %info.id, kind = ?info.kind, "relayed track published");
            self.publish_track(info.clone());
        }
        Ok(infos)
    }

    /// Edge: one relayed track ends (the origin's did); its viewers get a new offer.
    pub(crate) fn close_relay_track(&mut self, participant: ParticipantId, track: TrackId, now: Instant) {
        let Some(state) = self.participants.get_mut(&participant) else { return };
        let before = state.ingest.len();
        state.ingest.retain(|t| *t != track);
        if state.ingest.len() != before {
            self.unpublish(participant, track, now);
        }
    }

    /// Edge: the relayed track is gone; forget its leg.
    pub(crate) fn forget_relayed(&mut self, track: TrackId) {
        if let Some(leg) = self.relayed.remove(&track) {
            self.relay_in.remove(&leg);
            self.out.demux.push(DemuxCtl::Relay(leg, None));
        }
    }

    /// Edge: a datagram of one of this worker's legs.
    pub(crate) fn relay_datagram(&mut self, leg: u32, data: BytesMut, at: Instant, now: Instant) {
        let Some(r) = self.relay_in.get_mut(&leg) else {
            self.plane.counters.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(seq) = relay::seq_of(&data).filter(|s| r.window.fresh(*s)) else {
            r.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let len = data.len() as u64;
        let opened = match relay::open(&r.key, r.track, data, at) {
            Ok(o) => o,
            Err(e) => {
                r.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(leg, "relay datagram refused: {e}");
                return;
            }
        };
        r.window.mark(seq);
        r.stats.packets.fetch_add(1, Ordering::Relaxed);
        r.stats.bytes.fetch_add(len, Ordering::Relaxed);
        r.stats.lost.store(r.window.lost(), Ordering::Relaxed);
        r.stats.record_delay(relay::unix_us(at, now).saturating_sub(opened.origin_us));
        if opened.packet.layer >= r.layers {
            r.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let participant = r.participant;
        self.ingest(participant, opened.packet, now);
    }

    /// Edge: a keyframe of a relayed track is wanted: signaling asks the origin (at most once
    /// per layer per PLI throttle; a viewer still waiting asks again).
    /// Returns false when `track` is not relayed here.
    pub(crate) fn relay_keyframe(&mut self, track: TrackId, layer: u8, now: Instant) -> bool {
        let Some(leg) = self.relayed.get(&track) else { return false };
        let throttle = self.plane.config.pli_throttle;
        let Some(r) = self.relay_in.get_mut(leg) else { return false };
        let slot = usize::from(layer.min(3));
        if r.keyframe_asked[slot].is_some_and(|t| now.saturating_duration_since(t) < throttle) {
            return true;
        }
        r.keyframe_asked[slot] = Some(now);
        let participant = r.participant;
        self.emit(participant, SfuEvent::KeyframeWanted(track, layer));
        true
    }

    /// Edge: the simulcast layers a relayed track has, if it is one.
    pub(crate) fn relayed_layers(&self, track: TrackId) -> Option<u8> {
        self.relayed.get(&track).and_then(|leg| self.relay_in.get(leg)).map(|r| r.layers)
    }
}
