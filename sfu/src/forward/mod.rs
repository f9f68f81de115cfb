//! Forwarding decisions per subscriber track: which layer to send (selector) and the rewrite
//! that makes a switch invisible to the receiver (forwarder); and when a viewer whose path cannot
//! carry the lowest layer gets audio only (fallback); and what a new viewer starts from (gop).

pub mod fallback;
pub mod forwarder;
pub mod gop;
pub mod munger;
pub mod selector;
