//! The live room's features.

pub mod room;
pub mod studio;
