//! The request flags `check` and `explain` share: the same request, decided locally or by a
//! running plangate.

use plangate::clock::{Nanos, parse_rfc3339};

use super::error::CliError;

/// One request, as flags.
#[derive(clap::Args)]
pub struct RequestArgs {
    /// The API key value presented; `-` reads it from stdin, and PLANGATE_KEY gives it too —
    /// either keeps it out of `ps` and the shell history.
    #[arg(long, env = "PLANGATE_KEY", hide_env_values = true)]
    key: Option<String>,
    #[arg(long)]
    pub api: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
    /// The host the request is sent to (`api.example.com`), for custom domain names; used
    /// when --api and --stage are not given.
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP verb.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Request path (a query string is ignored).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Units the request charges.
    #[arg(long, default_value_t = 1)]
    pub hits: u64,
    /// Decide at this time (RFC 3339) instead of now.
    #[arg(long)]
    pub at: Option<String>,
}

impl RequestArgs {
    /// The key presented: `--key`'s value, or a line of stdin for `-`.
    pub fn key(&self) -> Result<Option<String>, CliError> {
        match self.key.as_deref() {
            Some("-") => {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| CliError::Flag {
                        flag: "--key",
                        reason: format!("cannot read the key from stdin: {e}"),
                    })?;
                Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
            }
            k => Ok(k.map(str::to_owned)),
        }
    }

    /// `--at` in nanoseconds since the epoch, if given.
    pub fn at(&self) -> Result<Option<Nanos>, CliError> {
        self.at
            .as_deref()
            .map(|t| {
                parse_rfc3339(t).map_err(|reason| CliError::Flag {
                    flag: "--at",
                    reason,
                })
            })
            .transpose()
    }
}
