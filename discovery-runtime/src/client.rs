//! A storage API client: a tonic channel to gloo-core that carries the caller's bearer token
//! on every call, over plain HTTP/2 or TLS.
use std::{path::PathBuf, time::Duration};

use proto::v1::storage_client::StorageClient;
use tonic::{
    metadata::AsciiMetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
    Request, Status,
};

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct BearerToken(AsciiMetadataValue);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Client = StorageClient<InterceptedService<Channel, BearerToken>>;

#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// `http://127.0.0.1:9980` or `https://gloo.example:9980`.
    pub server: String,
    pub token: String,
    /// PEM CA bundle to verify an `https://` server with (the system roots are not used).
    pub ca_file: Option<PathBuf>,
    pub max_message_bytes: Option<usize>,
    pub connect_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("server address {0:?} is not a valid URL (e.g. http://127.0.0.1:9980)")]
    BadServer(String),
    #[error("the token has characters that cannot go in an HTTP header")]
    BadToken,
    #[error("no token: pass --token or set GLOO_TOKEN")]
    NoToken,
    #[error("reading CA file {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
    #[error("connecting to {server}: {source}")]
    Transport {
        server: String,
        source: tonic::transport::Error,
    },
}

impl ConnectOptions {
    fn endpoint(&self) -> Result<Endpoint, ConnectError> {
        let mut ep = Endpoint::from_shared(self.server.clone())
            .map_err(|_| ConnectError::BadServer(self.server.clone()))?
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(5)))
            .tcp_nodelay(true);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path).map_err(|source| ConnectError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            ep = ep
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|source| ConnectError::Transport {
                    server: self.server.clone(),
                    source,
                })?;
        }
        Ok(ep)
    }

    fn interceptor(&self) -> Result<BearerToken, ConnectError> {
        if self.token.is_empty() {
            return Err(ConnectError::NoToken);
        }
        let value = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| ConnectError::BadToken)?;
        Ok(BearerToken(value))
    }

    fn client(&self, channel: Channel) -> Result<Client, ConnectError> {
        let mut c = StorageClient::with_interceptor(channel, self.interceptor()?);
        if let Some(n) = self.max_message_bytes {
            c = c.max_decoding_message_size(n).max_encoding_message_size(n);
        }
        Ok(c)
    }

    /// Connects now; fails if the server cannot be reached.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let channel =
            self.endpoint()?
                .connect()
                .await
                .map_err(|source| ConnectError::Transport {
                    server: self.server.clone(),
                    source,
                })?;
        self.client(channel)
    }

    /// A client that connects on first use and reconnects after failures, for long-running
    /// services that must outlive restarts of gloo-core.
    pub fn connect_lazy(&self) -> Result<Client, ConnectError> {
        let channel = self.endpoint()?.connect_lazy();
        self.client(channel)
    }
}
