//! Forwarding decisions per subscriber track: which layer to send (selector) and the rewrite
//! that makes a switch invisible to the receiver (forwarder).

pub mod forwarder;
pub mod munger;
pub mod selector;
