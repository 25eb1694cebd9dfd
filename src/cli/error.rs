//! What a command can fail with. A rejected configuration is not an error here: commands print
//! its errors and exit 1; everything below exits 2.

use plangate::server::ServeError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{0}")]
    Admin(String),
    #[error("{0}")]
    Bench(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}
