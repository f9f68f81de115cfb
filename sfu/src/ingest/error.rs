//! What goes wrong with a studio feed's media, as the bridge reports it.

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("malformed media: {0}")]
    Malformed(&'static str),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("cannot decode: {0}")]
    Decode(String),
}
