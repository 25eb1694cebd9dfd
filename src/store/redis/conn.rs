//! Connection-level helpers of the Redis store: TLS files, and Redis errors as store errors.

use std::path::PathBuf;
use std::time::Duration;

use crate::store::error::{StoreError, StoreErrorKind};

/// The certificate files of a `rediss://` connection (PEM).
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    /// CA certificates that verify Redis's certificate (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key, for `tls-auth-clients yes`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl RedisTls {
    /// Whether any file is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The files, read.
    pub(crate) fn read(&self) -> Result<redis::TlsCertificates, StoreError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| {
                StoreError::caused_by(
                    StoreErrorKind::Config,
                    format!("cannot read {}: {e}", p.display()),
                    e,
                )
            })
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(StoreError::new(
                    StoreErrorKind::Config,
                    "a Redis client certificate needs both its certificate and its key",
                ));
            }
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert: self.ca.as_ref().map(read).transpose()?,
        })
    }
}

pub fn store_error(e: redis::RedisError) -> StoreError {
    let kind = if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::Protocol
    };
    StoreError::caused_by(kind, e.to_string(), e)
}

/// A connection or PING error, with authentication failures named as such.
pub fn auth_error(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
    {
        StoreError::caused_by(
            StoreErrorKind::Config,
            "authentication failed: check the password (and user) in the Redis URL",
            e,
        )
    } else if text.contains("NOAUTH") {
        StoreError::caused_by(
            StoreErrorKind::Config,
            "authentication required: Redis asks for a password the URL does not give",
            e,
        )
    } else {
        store_error(e)
    }
}

pub fn timeout_error(t: Duration) -> StoreError {
    StoreError::new(
        StoreErrorKind::Unavailable,
        format!("redis did not answer within {t:?}"),
    )
}
