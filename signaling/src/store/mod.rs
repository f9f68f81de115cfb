//! Persistence.

pub mod keys_file;
