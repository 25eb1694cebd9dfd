//! A client of a running plangate's management API (gRPC on its admin address), for the
//! commands that talk to one: `usage`, `explain`.

use plangate::management::pb::management_client::ManagementClient;
use tonic::transport::Channel;

use super::error::CliError;

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
