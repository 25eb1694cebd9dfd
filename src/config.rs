//! Configuration: the file types users write (`file`), the loader that reports every error with
//! its line and column (`load`), API keys from YAML and CSV key files (`keys`), and `compile`,
//! which turns a parsed file into the immutable [`Snapshot`](crate::snapshot::Snapshot).
//!
//! Data flows one way: file → compile → snapshot. Nothing below the configuration (engine,
//! stores, the wire) reads the file types.

pub mod compile;
pub mod error;
pub mod file;
mod keys;
pub mod load;
pub mod location;
pub mod render;
mod split;

pub use compile::{Compiled, compile};
pub use error::{ConfigError, ConfigErrors, ErrorKind};
pub use file::ConfigFile;
pub use keys::is_placeholder;
pub use load::{base_dir, load_file, load_str, parse};
