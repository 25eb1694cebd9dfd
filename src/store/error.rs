//! What can go wrong in a counter store, and whether retrying may help.

use std::sync::Arc;

/// A counter store failure: what kind, a message for operators, and the underlying error.
///
/// What a failure does to an answer is decided in one place, the engine's
/// failure policy (`FailurePolicy`, in the engine, above the stores); a store only reports.
#[derive(Debug, Clone, thiserror::Error)]
#[error("counter store {}: {message}", kind.as_str())]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// The kinds of store failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// No answer in time, or the connection failed: retrying may help.
    Unavailable,
    /// An answer plangate cannot read (a script error, a reply of the wrong shape).
    Protocol,
    /// A setting is wrong (a bad URL): only fixing it helps.
    Config,
    /// The embedded database on disk failed.
    Disk,
    /// The operation does not apply (e.g. `set_used` on a limit that is not a quota).
    Unsupported,
    /// The embedded database is held by another process: not corrupt, never to be moved aside.
    InUse,
}

impl StoreErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Protocol => "protocol error",
            StoreErrorKind::Config => "misconfigured",
            StoreErrorKind::Disk => "disk error",
            StoreErrorKind::Unsupported => "unsupported operation",
            StoreErrorKind::InUse => "in use by another process",
        }
    }
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same, caused by `source`.
    pub fn caused_by(
        kind: StoreErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError {
            kind,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The message without the kind (the kind is in `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}
