//! The network edge: the receive loop on the one UDP port, the demux that finds a datagram's
//! session, and batched sends.

pub mod batch;
pub mod demux;
// The send path of our own (issue 16) is being built: the sealer is used by its tests and the
// forward bench until the worker sends with it.
pub(crate) mod recv;
#[allow(dead_code)]
pub mod srtp;
