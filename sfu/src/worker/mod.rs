//! The workers: one thread per core, each owning a share of the participants and their
//! sessions. The thread (`run`) owns the socket, the queues and the clock; everything it
//! decides is in the sans-IO [`core::Core`], which takes `(input, now)` and leaves datagrams,
//! messages for other workers, events and demux changes in its outputs.
//!
//! ```text
//!  queues (urgent > control > media) ──► run ──► Core::handle / command / handle_timeout
//!                                          ◄── Outputs: transmit (one sendmmsg), to_workers,
//!                                              events (per participant's sink), demux changes
//! ```
//!
//! Media between workers travels on a bounded queue and may be dropped under load (NACK and
//! PLI repair it); control (interest, track gone, layer demand, keyframe requests, signaling's
//! commands) travels on a queue that never drops, since nothing would repair it.

pub(crate) mod core;
mod dynacast;
pub(crate) mod keyframes;
mod liveness;
pub(crate) mod msg;
mod participants;
pub(crate) mod plane;
mod pump;
pub(crate) mod relays;
mod routing;
#[cfg(test)]
mod sim;
mod stats;
pub(crate) mod tables;
pub(crate) mod timers;

use crate::api::EventSink;
use crate::api::SfuEvent;
use crate::ids::ParticipantId;
use crate::net::demux::DemuxCtl;
use crate::worker::core::Core;
use crate::worker::msg::{Command, WorkerMsg};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where each participant's events go: kept by the thread, since the core holds no channel.
type Sinks = std::collections::HashMap<ParticipantId, EventSink>;

/// Messages handled between two checks of timers.
const BATCH: usize = 256;
/// The longest a worker sleeps without looking at the stop flag.
const IDLE: Duration = Duration::from_millis(100);

/// A worker's queues.
pub(crate) struct Queues {
    /// STUN and DTLS datagrams, handled first so joins and ICE checks do not wait behind a
    /// fan-out backlog (bounded; a full queue drops, the client retransmits).
    pub urgent: Receiver<WorkerMsg>,
    /// Commands and control between workers (unbounded: never dropped).
    pub control: Receiver<WorkerMsg>,
    /// Datagrams and media (bounded; a full queue drops, counted).
    pub media: Receiver<WorkerMsg>,
}

/// Where a worker's outputs go.
pub(crate) struct Io {
    pub socket: Arc<UdpSocket>,
    /// Per worker: the media queue and the control queue.
    pub media: Vec<Sender<WorkerMsg>>,
    pub control: Vec<Sender<WorkerMsg>>,
    pub demux: Sender<DemuxCtl>,
    pub stop: Arc<AtomicBool>,
}

/// The worker thread.
pub(crate) fn run(mut core: Core, io: Io, queues: Queues) {
    let mut sinks = Sinks::new();
    while !io.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        core.handle_timeout(now);
        flush(&mut core, &io, &mut sinks);
        let wait = core.poll_timeout().map_or(IDLE, |at| at.saturating_duration_since(now)).min(IDLE);
        let first = crossbeam_channel::select_biased! {
            recv(queues.urgent) -> m => m.map_err(|_| RecvTimeoutError::Disconnected),
            recv(queues.control) -> m => m.map_err(|_| RecvTimeoutError::Disconnected),
            recv(queues.media) -> m => m.map_err(|_| RecvTimeoutError::Disconnected),
            default(wait) => Err(RecvTimeoutError::Timeout),
        };
        match first {
            Ok(msg) => {
                handle(&mut core, msg, &io, &mut sinks);
                let quick = |core: &mut Core, sinks: &mut Sinks| {
                    for m in queues.urgent.try_iter().take(BATCH) {
                        handle(core, m, &io, sinks);
                    }
                    for m in queues.control.try_iter().take(BATCH) {
                        handle(core, m, &io, sinks);
                    }
                };
                for msg in queues.media.try_iter().take(BATCH) {
                    quick(&mut core, &mut sinks);
                    handle(&mut core, msg, &io, &mut sinks);
                }
                quick(&mut core, &mut sinks);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    core.close_all(Instant::now());
    flush(&mut core, &io, &mut sinks);
}

fn handle(core: &mut Core, msg: WorkerMsg, io: &Io, sinks: &mut Sinks) {
    let now = Instant::now();
    match msg {
        WorkerMsg::Input(input) => core.handle(input, now),
        WorkerMsg::Join(participant, events, player) => {
            sinks.insert(participant, events);
            core.command(Command::AddParticipant { participant, player }, now);
        }
        WorkerMsg::Attach(participant, events) => {
            if let Some(sink) = sinks.get_mut(&participant) {
                *sink = events;
            }
        }
        WorkerMsg::Command(cmd, reply) => {
            let leaving = match &cmd {
                Command::RemoveParticipant { participant } => Some(*participant),
                _ => None,
            };
            let answer = core.command(cmd, now);
            if let Some(reply) = reply {
                reply.send(answer);
            }
            if let Some(p) = leaving {
                // Its last events (sessions closed) go out before the sink is dropped.
                flush(core, io, sinks);
                sinks.remove(&p);
            }
        }
    }
    flush(core, io, sinks);
}

/// Carry out what the core asked for.
fn flush(core: &mut Core, io: &Io, sinks: &mut Sinks) {
    let counters = &core.plane.counters;
    let (_, bytes) = core.out.transmit.flush(&io.socket);
    // Most calls send nothing (RTCP in, a command): no shared-counter write for them.
    if bytes > 0 {
        counters.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    for (w, input) in core.out.to_workers.drain(..) {
        let media = input.is_media();
        let queue = if media { io.media.get(w) } else { io.control.get(w) };
        let Some(tx) = queue else { continue };
        match tx.try_send(WorkerMsg::Input(input)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counters.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
            // That worker has stopped: the plane is shutting down.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
    for ctl in core.out.demux.drain(..) {
        // Unbounded; fails only when the receive thread has stopped.
        let _ = io.demux.send(ctl);
    }
    for (participant, event) in core.out.events.drain(..) {
        deliver(sinks, participant, event);
    }
}

fn deliver(sinks: &Sinks, participant: ParticipantId, event: SfuEvent) {
    let Some(sink) = sinks.get(&participant) else { return };
    match sink.deliver(event) {
        crate::api::Delivery::Queued => {}
        // The participant's signaling session has ended; its removal is on the way.
        crate::api::Delivery::Closed => tracing::debug!(%participant, "event dropped: participant gone"),
        // Its reader resyncs (`Sfu::resync`).
        crate::api::Delivery::Dropped => tracing::debug!(%participant, "event dropped: queue full, the participant resyncs"),
    }
}
