//! The network edge: the receive loop on the one UDP port, the demux that finds a datagram's
//! session, and batched sends.

pub mod batch;
pub mod demux;
pub(crate) mod recv;
pub mod srtp;
