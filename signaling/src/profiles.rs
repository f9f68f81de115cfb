//! Live profiles (the operations guide's "profile families"): how a live's media is shaped —
//! the publishers' simulcast ladder, how often key frames come, the viewers' playout delay, and
//! whether a viewer whose path cannot carry the lowest layer falls back to audio only
//! (docs/protocol.md §6.3). A host's token names the profile (`profile` claim); the room's
//! default (`room.profile`) applies otherwise. Every participant learns it in `joined.profile`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One simulcast layer, as the page passes it to `RTCRtpSender` encodings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// `q`, `h` or `f` (the names the SFU maps to layers 0, 1, 2).
    pub rid: String,
    pub scale_resolution_down_by: f64,
    pub max_bitrate_kbps: u32,
    pub max_framerate: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Lowest layer first; one to three layers.
    pub layers: Vec<LayerSpec>,
    /// The server asks every publisher for a key frame at least this often (0 = only when a
    /// viewer needs one). Shorter: faster joins and recovery, more bits.
    pub keyframe_interval_secs: u32,
    /// The playout delay viewers aim for (`RTCRtpReceiver.jitterBufferTarget`), ms: 0 for the
    /// lowest delay, more to ride out jitter.
    pub playout_delay_ms: u32,
    /// A viewer whose path cannot carry the lowest layer gets audio only until it can.
    pub audio_only_fallback: bool,
}

fn layer(rid: &str, down: f64, kbps: u32, fps: u32) -> LayerSpec {
    LayerSpec { rid: rid.into(), scale_resolution_down_by: down, max_bitrate_kbps: kbps, max_framerate: fps }
}

impl Default for Profile {
    fn default() -> Self {
        standard()
    }
}

/// Balanced: the ladder the page always used, a key frame every 4 s, a small buffer.
fn standard() -> Profile {
    Profile {
        layers: vec![layer("q", 4.0, 150, 15), layer("h", 2.0, 500, 30), layer("f", 1.0, 1500, 30)],
        keyframe_interval_secs: 4,
        playout_delay_ms: 100,
        audio_only_fallback: true,
    }
}

/// The built-in families: `interactive` (lowest delay, for conversation with the audience),
/// `standard`, `continuity` (never freeze: lighter layers, frequent key frames, a larger buffer).
pub fn builtin() -> BTreeMap<String, Profile> {
    BTreeMap::from([
        (
            "interactive".to_owned(),
            Profile {
                layers: vec![layer("q", 4.0, 150, 15), layer("h", 2.0, 500, 30), layer("f", 1.0, 1200, 30)],
                keyframe_interval_secs: 2,
                playout_delay_ms: 0,
                audio_only_fallback: true,
            },
        ),
        ("standard".to_owned(), standard()),
        (
            "continuity".to_owned(),
            Profile {
                layers: vec![layer("q", 4.0, 100, 15), layer("h", 2.0, 350, 24), layer("f", 1.0, 1000, 30)],
                keyframe_interval_secs: 2,
                playout_delay_ms: 400,
                audio_only_fallback: true,
            },
        ),
    ])
}

/// A profile as clients receive it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProfileView {
    pub name: String,
    #[serde(flatten)]
    pub profile: Profile,
}

/// Check one profile's values.
pub fn validate(name: &str, p: &Profile) -> anyhow::Result<()> {
    if !(1..=3).contains(&p.layers.len()) {
        anyhow::bail!("profiles.{name}: one to three layers");
    }
    for (i, l) in p.layers.iter().enumerate() {
        let want = ["q", "h", "f"][3 - p.layers.len() + i];
        if l.rid != want {
            anyhow::bail!("profiles.{name}: layer {i} must have rid {want:?} (lowest first: q, h, f)");
        }
        if !(1.0..=16.0).contains(&l.scale_resolution_down_by)
            || !(30..=20_000).contains(&l.max_bitrate_kbps)
            || !(1..=60).contains(&l.max_framerate)
        {
            anyhow::bail!("profiles.{name}: layer {}: scale 1..=16, 30..=20000 kbit/s, 1..=60 fps", l.rid);
        }
    }
    if p.keyframe_interval_secs > 60 || p.playout_delay_ms > 4000 {
        anyhow::bail!("profiles.{name}: keyframe_interval_secs ≤ 60, playout_delay_ms ≤ 4000");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_families_are_valid_and_bad_ones_are_refused() {
        for (name, p) in builtin() {
            validate(&name, &p).expect("built-in profile");
        }
        let mut p = standard();
        p.layers.swap(0, 2);
        assert!(validate("x", &p).is_err(), "highest first is refused");
        let mut p = standard();
        p.layers.truncate(1);
        assert!(validate("x", &p).is_err(), "one layer must be f");
        p.layers[0].rid = "f".into();
        validate("x", &p).expect("a single full layer");
        let mut p = standard();
        p.playout_delay_ms = 10_000;
        assert!(validate("x", &p).is_err());
    }
}
