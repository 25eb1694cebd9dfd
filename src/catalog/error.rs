//! The errors of catalog operations, as AWS names them.

use crate::store::StoreError;

/// AWS's error kinds for catalog operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    BadRequest,
    Conflict,
    LimitExceeded,
    /// The store failed (a retry may help).
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CatalogError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CatalogError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CatalogError {
            kind,
            message: message.into(),
        }
    }

    pub fn store(e: StoreError) -> Self {
        let kind = match e.kind() {
            crate::store::StoreErrorKind::Config => ErrorKind::BadRequest,
            crate::store::StoreErrorKind::Unsupported => ErrorKind::BadRequest,
            _ => ErrorKind::Unavailable,
        };
        CatalogError::new(kind, format!("the runtime catalog: {e}"))
    }
}
