//! The signaling protocol: JSON text frames with a `type` field. docs/protocol.md has an
//! example of every message. Version: [`PROTOCOL_VERSION`]; a client sends its version in
//! `join` and the server answers with its own in `joined`.

use crate::auth::Role;
use crate::error::ErrorCode;
use serde::{Deserialize, Serialize};
use sfu::{MediaKind, ParticipantId, TrackId};

pub const PROTOCOL_VERSION: u32 = 1;

/// Which of the participant's two peer connections a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Publisher,
    Subscriber,
}

impl From<Target> for sfu::SessionRole {
    fn from(t: Target) -> Self {
        match t {
            Target::Publisher => sfu::SessionRole::Publisher,
            Target::Subscriber => sfu::SessionRole::Subscriber,
        }
    }
}

impl From<sfu::SessionRole> for Target {
    fn from(r: sfu::SessionRole) -> Self {
        match r {
            sfu::SessionRole::Publisher => Target::Publisher,
            sfu::SessionRole::Subscriber => Target::Subscriber,
        }
    }
}

/// An ICE candidate as browsers serialise `RTCIceCandidateInit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Messages from clients.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First message: authenticate and enter the room.
    Join {
        token: Option<String>,
        #[serde(default)]
        room: Option<String>,
        #[serde(default)]
        protocol: Option<u32>,
        /// The `resume_token` of an earlier `joined`, to continue as that participant (§3.5).
        #[serde(default)]
        resume: Option<String>,
    },
    /// An SDP offer for the publisher connection (first publish or renegotiation).
    Publish { sdp: String },
    /// The answer to a server `offer` on the subscriber connection.
    Answer { sdp: String },
    /// Our network changed: restart ICE on the subscriber connection (the server sends an
    /// `offer` with new ICE credentials). The publisher connection restarts by a `publish`
    /// whose offer has new credentials.
    IceRestart,
    /// A trickled ICE candidate.
    Candidate { target: Target, candidate: Candidate },
    /// Mute or unmute one of your tracks.
    Mute { track: TrackId, muted: bool },
    /// Leave the room.
    Leave,
    /// End the room for everyone (host only).
    EndRoom,
    /// Keepalive; answered with `pong`.
    Ping {
        #[serde(default)]
        ts: Option<u64>,
    },
    /// The size a subscribed video is rendered at (device pixels; 0 × 0 = not shown). The server
    /// sends the smallest simulcast layer at least that tall.
    VideoSize { track: TrackId, width: u32, height: u32 },
    /// Quality choice for one subscribed track, or all when `track` is absent.
    Quality {
        #[serde(default)]
        track: Option<TrackId>,
        quality: sfu::Quality,
    },
    /// Ask for `stats` about your subscriptions.
    GetStats,
    /// Host only: mint a stream key for this room (shown once in `stream_key`).
    CreateStreamKey {
        #[serde(default)]
        label: Option<String>,
        /// `cohost` (default) or `host`: a host key's encoder starts the live by itself.
        #[serde(default)]
        seat: crate::store::KeySeat,
    },
    /// Host only: the room's stream keys (without secrets).
    ListStreamKeys,
    /// Host only: revoke a key; a feed streaming with it is cut at once.
    RevokeStreamKey { id: String },
    /// Post a comment (docs/protocol.md §13).
    Comment { text: String },
    /// Delete a comment: your own, or any as host or moderator.
    DeleteComment { id: i64 },
    /// A tap on a reaction (one of the six emoji); the server sends the sums every window.
    React { emoji: String },
    /// Host or moderator: act on an identity of this live.
    Moderate {
        action: ModAction,
        identity: String,
        /// For `timeout`: how long (1..=`chat.max_timeout_minutes`).
        #[serde(default)]
        minutes: Option<u32>,
        /// Shown to the identity when banned, and kept in the audit log.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Host or moderator: comments on/off, slow mode (seconds between a viewer's comments; 0 = off).
    ChatSettings {
        #[serde(default)]
        comments_enabled: Option<bool>,
        #[serde(default)]
        slow_mode_secs: Option<u32>,
    },
    /// Host or moderator: the live's blocked words.
    GetBlockedWords,
    /// Host or moderator: replace the live's blocked words.
    SetBlockedWords { words: Vec<String> },
    /// Report a comment to the moderators.
    Report {
        comment: i64,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Host or moderator: the open reports.
    GetReports,
    /// Host or moderator: close a report, deleting its comment or not.
    ResolveReport { id: i64, action: ReportAction },
    /// Host only: the live's audit log, newest first.
    GetAuditLog,
    /// Host or moderator: who is banned, restricted, timed out or appointed in this live.
    GetModerationState,
    /// Ask to go on stage (viewers, moderators).
    RequestStage,
    /// Withdraw your request.
    CancelStageRequest,
    /// Host (or moderators, when allowed): accept or decline a request.
    AnswerStageRequest { participant: ParticipantId, accept: bool },
    /// Host: invite a viewer on stage.
    InviteToStage { participant: ParticipantId },
    /// Answer the host's invitation.
    AnswerStageInvite { accept: bool },
    /// Host: take a co-host (or a studio feed) off stage.
    RemoveFromStage { participant: ParticipantId },
    /// Co-host: leave the stage and keep watching.
    StepDown,
    /// Host: whether moderators may answer requests.
    StageSettings { moderators_manage: bool },
    /// Host or moderator: pin a product of the room's catalog for everyone (docs/protocol.md §14).
    PinProduct { product: String },
    /// Host or moderator: take the pinned product down.
    UnpinProduct,
    /// A tap on the pinned product's checkout button (counted).
    ProductClick { product: String },
    /// Host or moderator: this live's supporters and totals.
    GetSupporters,
    /// The player's QoE, cumulative since the page joined (docs/protocol.md §15), every ~10 s.
    Qoe {
        #[serde(default)]
        client: Option<String>,
        #[serde(default)]
        first_frame_ms: Option<u64>,
        #[serde(default)]
        frames_decoded: u64,
        #[serde(default)]
        freezes: u64,
        #[serde(default)]
        freeze_ms: u64,
        /// Freezes that ended since the last report: how long each lasted.
        #[serde(default)]
        recoveries_ms: Vec<u64>,
        #[serde(default)]
        layer: Option<String>,
        #[serde(default)]
        concealed_ms: u64,
        #[serde(default)]
        connection_changes: u64,
        watch_ms: u64,
    },
    /// *Report a problem*: one of the tags, a sentence, and the page's context.
    ReportProblem {
        tag: String,
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        context: Option<serde_json::Value>,
    },
}

impl ClientMsg {
    /// The message's `type`, as a static string (metrics labels).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Join { .. } => "join",
            ClientMsg::Publish { .. } => "publish",
            ClientMsg::Answer { .. } => "answer",
            ClientMsg::IceRestart => "ice_restart",
            ClientMsg::Candidate { .. } => "candidate",
            ClientMsg::Mute { .. } => "mute",
            ClientMsg::Leave => "leave",
            ClientMsg::EndRoom => "end_room",
            ClientMsg::Ping { .. } => "ping",
            ClientMsg::VideoSize { .. } => "video_size",
            ClientMsg::Quality { .. } => "quality",
            ClientMsg::GetStats => "get_stats",
            ClientMsg::CreateStreamKey { .. } => "create_stream_key",
            ClientMsg::ListStreamKeys => "list_stream_keys",
            ClientMsg::RevokeStreamKey { .. } => "revoke_stream_key",
            ClientMsg::Comment { .. } => "comment",
            ClientMsg::DeleteComment { .. } => "delete_comment",
            ClientMsg::React { .. } => "react",
            ClientMsg::Moderate { .. } => "moderate",
            ClientMsg::ChatSettings { .. } => "chat_settings",
            ClientMsg::GetBlockedWords => "get_blocked_words",
            ClientMsg::SetBlockedWords { .. } => "set_blocked_words",
            ClientMsg::Report { .. } => "report",
            ClientMsg::GetReports => "get_reports",
            ClientMsg::ResolveReport { .. } => "resolve_report",
            ClientMsg::GetAuditLog => "get_audit_log",
            ClientMsg::GetModerationState => "get_moderation_state",
            ClientMsg::RequestStage => "request_stage",
            ClientMsg::CancelStageRequest => "cancel_stage_request",
            ClientMsg::AnswerStageRequest { .. } => "answer_stage_request",
            ClientMsg::InviteToStage { .. } => "invite_to_stage",
            ClientMsg::AnswerStageInvite { .. } => "answer_stage_invite",
            ClientMsg::RemoveFromStage { .. } => "remove_from_stage",
            ClientMsg::StepDown => "step_down",
            ClientMsg::StageSettings { .. } => "stage_settings",
            ClientMsg::PinProduct { .. } => "pin_product",
            ClientMsg::UnpinProduct => "unpin_product",
            ClientMsg::ProductClick { .. } => "product_click",
            ClientMsg::GetSupporters => "get_supporters",
            ClientMsg::Qoe { .. } => "qoe",
            ClientMsg::ReportProblem { .. } => "report_problem",
        }
    }
}

/// What a moderator does to an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModAction {
    /// Kick now and refuse every rejoin of this identity in this live.
    Ban,
    Unban,
    /// No comments for `minutes`.
    Timeout,
    /// End a time-out early.
    Untimeout,
    /// Shadow: their comments are shown to themselves only.
    Restrict,
    Unrestrict,
    /// Host only: the identity moderates this live (sticks across rejoins and restarts).
    AddModerator,
    /// Host only: the identity no longer moderates, whatever its token says.
    RemoveModerator,
}

impl ModAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ModAction::Ban => "ban",
            ModAction::Unban => "unban",
            ModAction::Timeout => "timeout",
            ModAction::Untimeout => "untimeout",
            ModAction::Restrict => "restrict",
            ModAction::Unrestrict => "unrestrict",
            ModAction::AddModerator => "add_moderator",
            ModAction::RemoveModerator => "remove_moderator",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportAction {
    /// Keep the comment.
    Dismiss,
    /// Delete the comment (for everyone) and close every report on it.
    Delete,
}

/// A comment as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CommentView {
    pub id: i64,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub text: String,
    /// Unix milliseconds.
    pub at: i64,
    /// The author's supporter badge in this live, if they bought one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<BadgeView>,
}

/// A supporter badge: its tier (1..=3) and the tier's name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BadgeView {
    pub tier: u8,
    pub name: String,
}

/// A badge tier as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TierView {
    pub tier: u8,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

/// A product as every page shows it (prices in the currency's minor unit).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProductView {
    pub id: String,
    pub title: String,
    pub price_minor: i64,
    pub currency: String,
    /// http(s) URL, or `/media/products/<id>?v=<n>` for an uploaded image, or empty.
    pub image_url: String,
    pub checkout_url: String,
}

/// One payment as the host's supporters panel lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SupporterView {
    pub payment: String,
    pub identity: String,
    pub name: String,
    pub tier: u8,
    pub tier_name: String,
    pub amount_minor: i64,
    pub currency: String,
    /// When the payment reached us (unix ms).
    pub at: i64,
}

/// A live's support so far (refunds taken out).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SupportTotals {
    pub payments: u64,
    /// Distinct identities.
    pub supporters: u64,
    pub amount_minor: i64,
    pub currency: String,
    /// Payments per tier, tier 1 first.
    pub by_tier: [u64; 3],
}

/// A report as moderators see it (`comment` is null when it is gone).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReportView {
    pub id: i64,
    pub comment: Option<CommentView>,
    pub comment_id: i64,
    pub reporter: String,
    pub reason: String,
    pub at: i64,
}

/// An identity that may not comment until `until` (unix ms).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimedOut {
    pub identity: String,
    pub until: i64,
}

/// The conversation as a joining participant finds it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatSnapshot {
    /// The last comments (`chat.history`) this participant may see, oldest first.
    pub comments: Vec<CommentView>,
    pub comments_enabled: bool,
    pub slow_mode_secs: u32,
    /// Reactions so far in this live, per emoji.
    pub reactions: std::collections::BTreeMap<String, u64>,
    /// The emoji `react` accepts.
    pub emoji: Vec<String>,
    /// Set when you are timed out (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out_until: Option<i64>,
    /// Open reports (host and moderators only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_reports: Option<usize>,
    /// The live's id (the server API's `/api/v1/lives/{id}`).
    #[serde(default)]
    pub live_id: String,
    /// The product pinned now.
    #[serde(default)]
    pub pinned_product: Option<ProductView>,
    /// The supporter badge tiers, cheapest first.
    #[serde(default)]
    pub tiers: Vec<TierView>,
}

/// How a participant came in: a browser (or any WebSocket client) with a token, a studio
/// feed (an encoder over RTMP or WHIP) with a stream key, or a standard player (WHEP) with a
/// token. Clients tell feeds by this, not by identity.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantKind {
    User,
    Studio,
    Player,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub identity: String,
    pub name: String,
    pub role: Role,
    pub kind: ParticipantKind,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrackView {
    pub id: TrackId,
    pub participant: ParticipantId,
    pub kind: MediaKind,
    pub mime_type: String,
    pub muted: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoomState {
    /// Waiting for the host.
    Waiting,
    Live,
    /// The host dropped; held for their return (`room.host_grace_secs`).
    Held,
    Ended,
}

/// The host's presence in a held live.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// The host dropped; the live is held for `grace_secs`.
    Reconnecting,
    /// The host is back; the live goes on.
    Back,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoomInfo {
    pub name: String,
    pub state: RoomState,
    /// Unix milliseconds when the host started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    pub publishers: usize,
    pub max_publishers: usize,
    pub viewers: usize,
    /// The live's profile (docs/protocol.md §6.3).
    #[serde(default)]
    pub profile: String,
}

/// Messages from the server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Joined {
        protocol: u32,
        participant: ParticipantInfo,
        room: RoomInfo,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackView>,
        #[serde(default)]
        chat: Box<ChatSnapshot>,
        /// How the live's media is shaped: publish with `layers`, play with `playout_delay_ms`.
        profile: Box<crate::profiles::ProfileView>,
        /// Send it in `join.resume` on a new connection after this one drops, within
        /// `limits.resume_grace_secs`, to continue as the same participant (§3.5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// This join took over a participant (`join.resume`): the same id, seat, tracks,
        /// subscriptions and peer connections; only the WebSocket is new.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// Your connection fell behind and messages for you were dropped: this is the room as it is
    /// now (the fields of `joined`); replace what you show with it. Messages after it are newer.
    Resync {
        participant: ParticipantInfo,
        room: RoomInfo,
        participants: Vec<ParticipantInfo>,
        tracks: Vec<TrackView>,
        chat: Box<ChatSnapshot>,
        profile: Box<crate::profiles::ProfileView>,
    },
    /// Answer to `publish`.
    Answer {
        sdp: String,
    },
    /// An offer for the subscriber connection; reply with `answer`.
    Offer {
        sdp: String,
    },
    Candidate {
        target: Target,
        candidate: Candidate,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant: ParticipantId,
        reason: String,
    },
    TrackPublished {
        track: TrackView,
    },
    TrackUnpublished {
        track: TrackId,
        participant: ParticipantId,
    },
    TrackMuted {
        track: TrackId,
        participant: ParticipantId,
        muted: bool,
    },
    /// The room changed (went live, publisher or viewer counts).
    RoomUpdate {
        room: RoomInfo,
    },
    /// State of one of your peer connections as the server sees it.
    ConnectionState {
        target: Target,
        state: sfu::ConnState,
    },
    RoomEnded {
        reason: String,
    },
    /// Dynacast, to a publisher: nobody needs layers of `track` above `max_layer` now (0 = `q`,
    /// 1 = `h`, 2 = `f`); pause them, and resume when this rises.
    Layers {
        track: TrackId,
        max_layer: u8,
    },
    /// Answer to `get_stats`.
    Stats {
        #[serde(skip_serializing_if = "Option::is_none")]
        bandwidth_bps: Option<u64>,
        /// Transport-wide congestion control feedback packets received from you.
        twcc_feedback: u64,
        /// The path toward you as the server's estimator measures it.
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<sfu::PathStats>,
        tracks: Vec<sfu::TrackStats>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The `type` of the message this refuses (absent for errors not caused by one message).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<String>,
    },
    /// A new stream key; `key` is never shown again.
    StreamKey {
        id: String,
        key: String,
        server_url: String,
        label: String,
        seat: crate::store::KeySeat,
    },
    StreamKeys {
        keys: Vec<crate::store::KeyView>,
    },
    StreamKeyRevoked {
        id: String,
    },
    /// A studio feed (RTMP) went live, lost its encoder (seat held for the grace period), or ended.
    StudioState {
        participant: ParticipantId,
        state: StudioState,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Something the host should fix in the encoder's settings (sent to hosts only).
    StudioNotice {
        participant: ParticipantId,
        code: String,
        message: String,
    },
    /// A new comment (to everyone, or to its author only when it is hidden).
    Comment {
        comment: CommentView,
    },
    /// A comment was deleted: remove it.
    CommentDeleted {
        id: i64,
    },
    /// The reactions of the last window (`counts`) and of the whole live (`totals`).
    Reactions {
        counts: std::collections::BTreeMap<String, u64>,
        totals: std::collections::BTreeMap<String, u64>,
    },
    /// Comments on/off and slow mode changed (to everyone).
    ChatSettings {
        comments_enabled: bool,
        slow_mode_secs: u32,
    },
    /// A participant's role changed (made or unmade moderator).
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    /// You were removed from the live (banned); the connection closes after this.
    Kicked {
        code: ErrorCode,
        reason: String,
    },
    /// Your own chat standing changed: timed out until (unix ms), or no longer.
    ChatStatus {
        timed_out_until: Option<i64>,
    },
    /// To the host and moderators: a moderation action was taken (also the acknowledgement).
    Moderation {
        entry: crate::store::AuditEntry,
    },
    /// The live's blocked words (`custom`: false while the server's default list is in force).
    BlockedWords {
        words: Vec<String>,
        custom: bool,
    },
    /// Your report was received.
    Reported {
        comment: i64,
    },
    /// To the host and moderators: a new report.
    ReportFiled {
        report: ReportView,
    },
    /// To the host and moderators: a report was closed (`dismissed` or `deleted`).
    ReportResolved {
        id: i64,
        resolution: String,
    },
    /// Answer to `get_reports`: the open reports, oldest first.
    Reports {
        reports: Vec<ReportView>,
    },
    /// Answer to `get_moderation_state`: identities by standing, sorted.
    ModerationState {
        moderators: Vec<String>,
        banned: Vec<String>,
        restricted: Vec<String>,
        timed_out: Vec<TimedOut>,
    },
    /// Answer to `get_audit_log`: newest first.
    AuditLog {
        entries: Vec<crate::store::AuditEntry>,
    },
    /// The host dropped (the live is held) or is back.
    HostStatus {
        state: HostState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grace_secs: Option<u64>,
    },
    /// To the stage: the live ends in `ends_in_secs` (`code`: `max_duration`).
    RoomWarning {
        code: String,
        ends_in_secs: u64,
        message: String,
    },
    /// To whoever answers requests: the queue, oldest first, after every change.
    StageRequests {
        requests: Vec<ParticipantInfo>,
        moderators_manage: bool,
    },
    /// To the requester: where the request stands (`pending` with its place, `declined`,
    /// `cancelled`).
    StageRequest {
        state: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
    },
    /// To a viewer: the host invites you on stage; answer with `answer_stage_invite`.
    StageInvite {
        from: ParticipantInfo,
    },
    /// To the host: the invitation went out, or was answered.
    StageInviteState {
        participant: ParticipantId,
        state: String,
    },
    /// To you: you have a seat on stage now (your role is `cohost`): publish.
    StageGranted {
        via: String,
    },
    /// To you: you are off stage (taken off by the host, or you stepped down).
    RemovedFromStage {
        by_host: bool,
    },
    /// The host made the room live with another profile than the one you joined with.
    LiveProfile {
        profile: Box<crate::profiles::ProfileView>,
    },
    /// To a viewer: video paused because your connection cannot carry the lowest layer (`active`:
    /// audio only now), or back (`active: false`). `reason`: `bandwidth`.
    AudioOnly {
        active: bool,
        reason: String,
    },
    /// To everyone: a product is pinned (again, when the pinned product was edited).
    ProductPinned {
        product: ProductView,
    },
    /// To everyone: the pinned product was taken down.
    ProductUnpinned {
        product: String,
    },
    /// To everyone: an identity's supporter badge now (null: a refund took it away).
    Badge {
        identity: String,
        badge: Option<BadgeView>,
    },
    /// To the host and moderators: a new payment.
    Supporter {
        supporter: SupporterView,
        totals: SupportTotals,
    },
    /// To the host and moderators: a payment was refunded.
    SupporterRefunded {
        payment: String,
        identity: String,
        totals: SupportTotals,
    },
    /// Answer to `get_supporters`: the payments in the order they came, and the totals.
    Supporters {
        supporters: Vec<SupporterView>,
        totals: SupportTotals,
    },
    /// To the host and moderators: the room's product catalog changed (fetch it again).
    ProductsChanged,
    /// Your problem report was received.
    ProblemReported {
        id: i64,
    },
    /// The node is shutting down: lives on it go on until they end or `ends_in_secs` passes; new
    /// participants are refused (`draining`). A page keeps watching.
    ServerDraining {
        ends_in_secs: u64,
    },
    /// Sent instead of `joined` when the room's live is placed on another node of the cluster:
    /// join again there, with the same token (close 4010 follows). `url` is that node's
    /// WebSocket URL.
    Redirect {
        url: String,
        node: String,
        room: String,
    },
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StudioState {
    Live,
    Reconnecting,
    Ended,
}

impl ServerMsg {
    pub fn error(e: &crate::error::AppError) -> Self {
        ServerMsg::Error { code: e.code, message: e.message.clone(), retry_after_ms: e.retry_after_ms, request: None }
    }

    /// The refusal of one client message of type `request`.
    pub fn error_for(e: &crate::error::AppError, request: &str) -> Self {
        ServerMsg::Error { code: e.code, message: e.message.clone(), retry_after_ms: e.retry_after_ms, request: Some(request.to_owned()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AppError;

    #[test]
    fn a_message_kind_is_its_wire_type() {
        for wire in [
            r#"{"type":"leave"}"#,
            r#"{"type":"end_room"}"#,
            r#"{"type":"comment","text":"x"}"#,
            r#"{"type":"get_supporters"}"#,
            r#"{"type":"pin_product","product":"p"}"#,
            r#"{"type":"stage_settings","moderators_manage":true}"#,
            r#"{"type":"qoe","watch_ms":1}"#,
            r#"{"type":"report_problem","tag":"audio"}"#,
            r#"{"type":"ping","ts":1}"#,
        ] {
            let msg: Result<ClientMsg, _> = serde_json::from_str(wire);
            let v: serde_json::Value = serde_json::from_str(wire).unwrap_or_default();
            match msg {
                Ok(m) => assert_eq!(Some(m.kind()), v["type"].as_str(), "{wire}"),
                Err(e) => panic!("{wire}: {e}"),
            }
        }
    }

    #[test]
    fn participants_say_their_kind() {
        let info = |kind| ParticipantInfo { id: ParticipantId::next(), identity: "x".into(), name: "X".into(), role: Role::Cohost, kind };
        let wire = |p: ParticipantInfo| serde_json::to_value(p).ok().and_then(|v| v.get("kind").cloned());
        assert_eq!(wire(info(ParticipantKind::User)), Some(serde_json::json!("user")));
        assert_eq!(wire(info(ParticipantKind::Studio)), Some(serde_json::json!("studio")));
    }

    #[test]
    fn an_error_tells_the_client_its_code_and_sentence_only() {
        let e = AppError::internal("could not store the stream key", "/var/lib/onair/keys.json: disk full");
        let wire = serde_json::to_value(ServerMsg::error(&e)).ok();
        assert_eq!(wire, Some(serde_json::json!({"type": "error", "code": "internal", "message": "could not store the stream key"})));
    }
}
