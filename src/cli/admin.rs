//! A client of a running plangate's management API (gRPC on its admin address), for the
//! commands that talk to one: `usage`, `explain`.

use plangate::management::pb::management_client::ManagementClient;
use tonic::transport::Channel;

use super::error::CliError;

/// How the commands that talk to a running plangate reach its admin address.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// The admin address of a running plangate (`http://host:port`; `host:port` means http).
    #[arg(
        long,
        global = true,
        env = "PLANGATE_ADMIN_ADDR",
        default_value = "http://127.0.0.1:9090"
    )]
    pub admin: String,
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
    /// Connects to the management API.
    pub async fn connect(&self) -> Result<Admin, CliError> {
        let address = if self.admin.contains("://") {
            self.admin.clone()
        } else {
            format!("http://{}", self.admin)
        };
        Admin::connect(&address, self.token.clone()).await
    }
}

/// The admin address and its token.
pub struct Admin {
    client: ManagementClient<Channel>,
    token: Option<String>,
}

impl Admin {
    /// Connects to `address` (`http://host:port`).
    pub async fn connect(address: &str, token: Option<String>) -> Result<Self, CliError> {
        let endpoint = tonic::transport::Endpoint::from_shared(address.to_owned())
            .map_err(|e| CliError::Admin(format!("--admin `{address}`: {e}")))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CliError::Admin(format!("{address}: {e}")))?;
        Ok(Admin {
            client: ManagementClient::new(channel),
            token,
        })
    }

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
}

/// A gRPC error as the CLI reports it.
pub fn status(e: tonic::Status) -> CliError {
    CliError::Admin(format!("management API: {:?}: {}", e.code(), e.message()))
}
