//! Simulcast layers: how many a track can have and which RID names which.

/// Spatial layers a track can have (simulcast: low, medium, high).
pub const MAX_LAYERS: usize = 3;

/// The simulcast layer of a RID. Onair's clients use LiveKit's `q`/`h`/`f` (quarter, half, full);
/// `l`/`m` and numeric RIDs are understood too. Unknown RIDs get `fallback`.
pub fn layer_of_rid(rid: Option<&str>, fallback: u8) -> u8 {
    match rid {
        None | Some("") => 0,
        Some("q" | "l" | "low" | "0") => 0,
        Some("h" | "m" | "mid" | "1") => 1,
        Some("f" | "high" | "2") => 2,
        Some(_) => fallback.min(MAX_LAYERS as u8 - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rids_map_to_layers() {
        assert_eq!(layer_of_rid(None, 0), 0);
        assert_eq!(layer_of_rid(Some("q"), 5), 0);
        assert_eq!(layer_of_rid(Some("h"), 5), 1);
        assert_eq!(layer_of_rid(Some("f"), 5), 2);
        assert_eq!(layer_of_rid(Some("weird"), 1), 1);
        assert_eq!(layer_of_rid(Some("weird"), 9), 2);
    }
}
