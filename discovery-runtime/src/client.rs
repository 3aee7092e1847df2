//! A storage API client: a tonic channel to gloo-core that carries the caller's bearer token
//! on every call, over plain HTTP/2 or TLS. [`SyncClient`] is the sync driver's Sync call,
//! which sends a [`DesiredSet`] as the encoded bytes it already is.
use std::{path::PathBuf, sync::Arc, time::Duration};

use proto::v1::{storage_client::StorageClient, Kind, SyncResponse};
use tonic::{
    metadata::AsciiMetadataValue,
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
    GrpcMethod, Request, Response, Status,
};

use crate::set::{DesiredSet, SyncMessage};

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

/// The storage API's Sync call for a [`DesiredSet`]: the same request `Client::sync` sends,
/// with the set's encoded objects copied into the request body instead of being decoded into
/// a `SyncRequest` first (for 20,000 objects that decoded copy was the largest allocation a
/// discovery service made).
#[derive(Clone)]
pub struct SyncClient {
    grpc: tonic::client::Grpc<InterceptedService<Channel, BearerToken>>,
}

impl SyncClient {
    /// `Sync(owner, kinds, set)`.
    pub async fn sync(
        &mut self,
        owner: &str,
        kinds: &[Kind],
        set: Arc<DesiredSet>,
        dry_run: bool,
    ) -> Result<Response<SyncResponse>, Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let mut req = Request::new(SyncMessage {
            owner: owner.into(),
            kinds: kinds.iter().map(|k| *k as i32).collect(),
            set: Some(set),
            dry_run,
        });
        req.extensions_mut()
            .insert(GrpcMethod::new("gloo.v1.Storage", "Sync"));
        let path = http::uri::PathAndQuery::from_static("/gloo.v1.Storage/Sync");
        self.grpc
            .unary(req, path, tonic_prost::ProstCodec::default())
            .await
    }
}

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

    fn sync_client(&self, channel: Channel) -> Result<SyncClient, ConnectError> {
        let mut grpc =
            tonic::client::Grpc::new(InterceptedService::new(channel, self.interceptor()?));
        if let Some(n) = self.max_message_bytes {
            grpc = grpc
                .max_decoding_message_size(n)
                .max_encoding_message_size(n);
        }
        Ok(SyncClient { grpc })
    }

    /// A client that connects on first use and reconnects after failures, for long-running
    /// services that must outlive restarts of gloo-core.
    pub fn connect_lazy(&self) -> Result<Client, ConnectError> {
        let channel = self.endpoint()?.connect_lazy();
        self.client(channel)
    }

    /// Like [`ConnectOptions::connect_lazy`], for the sync driver.
    pub fn sync_client_lazy(&self) -> Result<SyncClient, ConnectError> {
        let channel = self.endpoint()?.connect_lazy();
        self.sync_client(channel)
    }

    /// A [`Client`] and a [`SyncClient`] sharing one lazy connection.
    pub fn connect_lazy_with_sync(&self) -> Result<(Client, SyncClient), ConnectError> {
        let channel = self.endpoint()?.connect_lazy();
        Ok((self.client(channel.clone())?, self.sync_client(channel)?))
    }
}
