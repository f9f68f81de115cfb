//! The live room's features, each in its own module with its own tests, and the two things
//! they share: the one way into a room ([`join`]) and the dispatcher ([`dispatch`]) that hands a
//! client's message to the feature that answers it.
//!
//! | module | owns |
//! |---|---|
//! | [`join`] | authenticate → place in the room (and a seat, for a feed) → register with the SFU → fan out; and leaving |
//! | [`dispatch`] | `ClientMsg` → feature handler |
//! | [`resume`] | a dropped connection's participant kept for `limits.resume_grace_secs`, taken over by a resume |
//! | [`room`] | room rules: members, live/ended, tracks, mute, end, the reaper; `mute`, `end_room` |
//! | [`stage`] | the seats of the stage and their rules, the request queue and invitations |
//! | [`invitations`] | `request_stage`, answers, `invite_to_stage`, `remove_from_stage`, `step_down` |
//! | [`media`] | the participant's peer connections: `publish` (takes a seat), `answer`, `candidate`, `video_size`, `quality` |
//! | [`stats`] | `get_stats`, and `/api/stats` |
//! | [`studio`] | studio feeds over RTMP and WHIP, and the stream-key messages |
//! | [`whep`] | standard players over WHEP: a viewer whose m-lines follow the stage |
//! | [`chat`] | the conversation: comments, reactions, moderation, reports, the audit log |
//! | [`qoe`] | players' QoE reports, the live's KPIs, *Report a problem* |
//! | [`schedule`] | lives announced ahead: their rules, calendar file, reminders, the link to the live on air |
//! | [`commerce`] | supporter badges from the payment webhook, the supporters panel, product pins and their counters |
//!
//! Features talk to the media plane through the `sfu::Sfu` handle and to persistence through
//! [`crate::store::Store`]; none of them touches a socket of a browser.

pub mod chat;
pub mod commerce;
pub mod controls;
pub mod ctx;
pub mod dispatch;
pub mod invitations;
pub mod join;
pub mod media;
pub mod qoe;
pub mod resume;
pub mod room;
pub mod schedule;
pub mod stage;
pub mod stats;
pub mod studio;
pub mod whep;
