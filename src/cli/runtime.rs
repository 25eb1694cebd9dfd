//! The one way commands start an async runtime, and read durations given in seconds.

use std::time::Duration;

use super::error::CliError;

/// A runtime on all cores (servers, the load generator).
pub fn multi_thread() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// A runtime on this thread (one-shot commands).
pub fn current_thread() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

/// A flag given in seconds (`0.5`), as a duration; negative or not finite is an error.
pub fn seconds(flag: &'static str, secs: f64) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(secs).map_err(|e| CliError::Flag {
        flag,
        reason: format!("{secs} is not a duration in seconds: {e}"),
    })
}
