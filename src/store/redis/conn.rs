//! Connection-level helpers of the Redis store: TLS files, and Redis errors as store errors.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

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
    if matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask)
    ) {
        return StoreError::caused_by(StoreErrorKind::Unavailable, format!("{REDIRECTED}: {e}"), e);
    }
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

/// How a redirection's error starts: the node does not hold the slot (any more). The script
/// did not run there, so it may be sent again where the slot is.
pub const REDIRECTED: &str = "the key's slot is on another node (MOVED/ASK)";

/// Whether `e` is a TLS failure (a certificate refused or not trusted, a handshake alert): a
/// setting to fix, not a Redis to wait for.
fn is_tls_failure(e: &redis::RedisError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        source = s.source();
    }
    let text = e.to_string().to_ascii_lowercase();
    [
        "certificate",
        "handshake",
        "tls alert",
        "received fatal alert",
    ]
    .iter()
    .any(|w| text.contains(w))
}

/// A connection or PING error, with authentication failures named as such.
pub fn auth_error(e: redis::RedisError) -> StoreError {
    if is_tls_failure(&e) {
        return StoreError::caused_by(
            StoreErrorKind::Config,
            format!(
                "TLS with Redis failed ({e}): check --store-tls-ca, --store-tls-cert and \
                 --store-tls-key"
            ),
            e,
        );
    }
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

/// A client for one node at `url`, with the TLS files when any are given.
pub fn client(url: &str, tls: &RedisTls) -> Result<redis::Client, StoreError> {
    let bad_url =
        |e| StoreError::caused_by(StoreErrorKind::Config, format!("bad Redis URL: {e}"), e);
    if tls.is_set() {
        redis::Client::build_with_tls(url, tls.read()?).map_err(bad_url)
    } else {
        redis::Client::open(url).map_err(bad_url)
    }
}

/// A connection to one node that reconnects by itself (backoff 50 ms to 500 ms), each operation
/// bounded by `timeout`.
pub async fn manager(
    client: redis::Client,
    timeout: Duration,
) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let setup = timeout.max(Duration::from_secs(2));
    tokio::time::timeout(setup, ConnectionManager::new_with_config(client, config))
        .await
        .map_err(|_| timeout_error(setup))?
        .map_err(store_error)
}

/// A step of connecting, bounded by `t`; its errors named as at start (an authentication
/// failure as such).
pub async fn at_start<T>(
    t: Duration,
    step: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    bounded(t, step, auth_error).await
}

/// `f`, bounded by `t`: a timeout, or a Redis error named by `named`, as a store error.
pub async fn bounded<T>(
    t: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
    named: fn(redis::RedisError) -> StoreError,
) -> Result<T, StoreError> {
    tokio::time::timeout(t, f)
        .await
        .map_err(|_| timeout_error(t))?
        .map_err(named)
}
