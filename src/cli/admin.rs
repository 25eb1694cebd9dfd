//! The one client of a running plangate's admin address, for every command that talks to one
//! (`health`, `usage`, `explain`, `watch`, `keys`, `plans`, `export`, `bench-catalog`): a tonic
//! channel (HTTP/2, plain or TLS, with a client certificate for mTLS) that carries the
//! management API's gRPC calls and the plain HTTP GETs of `/healthz` and `/readyz` alike.

use http_body_util::BodyExt;
use plangate::management::pb::management_client::ManagementClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tower::ServiceExt;

use super::error::CliError;

/// How the commands that talk to a running plangate reach its admin address.
#[derive(clap::Args, Clone)]
pub struct AdminArgs {
    /// The admin address of a running plangate: `http://host:port` or `https://host:port`
    /// (`host:port` means http; a wildcard host, 0.0.0.0, is reached on loopback). Without it
    /// and PLANGATE_ADMIN: PLANGATE_ADMIN_ADDR (what `serve` listens on, so that a client in
    /// the server's container finds it), else http://127.0.0.1:9090.
    #[arg(long, global = true, env = "PLANGATE_ADMIN")]
    pub admin: Option<String>,
    /// `https://` only: the CA certificates (PEM) that verify the admin listener's certificate,
    /// instead of the system's roots.
    #[arg(long, global = true, env = "PLANGATE_ADMIN_CA")]
    pub admin_ca: Option<std::path::PathBuf>,
    /// `https://` only: a client certificate (PEM) for an admin listener with mTLS
    /// (`--admin-tls-client-ca`); with --admin-key.
    #[arg(
        long,
        global = true,
        env = "PLANGATE_ADMIN_CERT",
        requires = "admin_key"
    )]
    pub admin_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --admin-cert.
    #[arg(
        long,
        global = true,
        env = "PLANGATE_ADMIN_KEY",
        requires = "admin_cert"
    )]
    pub admin_key: Option<std::path::PathBuf>,
    /// Bearer token of the admin API.
    #[arg(
        long,
        global = true,
        env = "PLANGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl AdminArgs {
    /// The address as a URL: a scheme added when none is given, a wildcard host made loopback.
    pub fn url(&self) -> String {
        let given = self
            .admin
            .clone()
            .or_else(|| std::env::var("PLANGATE_ADMIN_ADDR").ok())
            .unwrap_or_else(|| "http://127.0.0.1:9090".to_owned());
        let a = given.trim().trim_end_matches('/');
        let a = if a.contains("://") {
            a.to_owned()
        } else {
            format!("http://{a}")
        };
        a.replace("://0.0.0.0", "://127.0.0.1")
            .replace("://[::]", "://[::1]")
    }

    fn read(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
        std::fs::read(path).map_err(|e| CliError::Flag {
            flag,
            reason: format!("{}: {e}", path.display()),
        })
    }

    /// Connects to the admin address (TLS for `https://`).
    pub async fn connect(&self) -> Result<Admin, CliError> {
        let address = self.url();
        let bad = |e: &dyn std::fmt::Display| CliError::Admin(format!("--admin `{address}`: {e}"));
        let mut endpoint =
            tonic::transport::Endpoint::from_shared(address.clone()).map_err(|e| bad(&e))?;
        let https = address.starts_with("https://");
        if !https && (self.admin_ca.is_some() || self.admin_cert.is_some()) {
            return Err(CliError::Flag {
                flag: "--admin-ca/--admin-cert",
                reason: format!("TLS files are given but --admin `{address}` is not https://"),
            });
        }
        if https {
            let mut tls = ClientTlsConfig::new().with_enabled_roots();
            if let Some(ca) = &self.admin_ca {
                tls = tls.ca_certificate(Certificate::from_pem(Self::read("--admin-ca", ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.admin_cert, &self.admin_key) {
                tls = tls.identity(Identity::from_pem(
                    Self::read("--admin-cert", cert)?,
                    Self::read("--admin-key", key)?,
                ));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            // The cause names what failed (refused, a certificate not trusted, …).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            CliError::Admin(format!("{address}: {text}"))
        })?;
        Ok(Admin {
            client: ManagementClient::new(channel.clone()),
            channel,
            address,
            token: self.token.clone(),
        })
    }
}

/// A connection to the admin address, and its token.
pub struct Admin {
    client: ManagementClient<Channel>,
    channel: Channel,
    address: String,
    token: Option<String>,
}

impl Admin {
    pub fn client(&mut self) -> &mut ManagementClient<Channel> {
        &mut self.client
    }

    /// `msg` with the token, when there is one.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    /// A plain HTTP GET of `path` on the same connection (`/healthz`, `/readyz`): its status
    /// and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String), CliError> {
        let failed =
            |e: &dyn std::fmt::Display| CliError::Admin(format!("{}{path}: {e}", self.address));
        let request = axum::http::Request::get(format!("{}{path}", self.address))
            .body(tonic::body::Body::empty())
            .map_err(|e| failed(&e))?;
        let response = self
            .channel
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| failed(&e))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(&e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A gRPC error as the CLI reports it.
pub fn status(e: tonic::Status) -> CliError {
    CliError::Admin(format!("management API: {:?}: {}", e.code(), e.message()))
}
