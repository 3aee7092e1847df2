//! The ADS service on the wire: the gRPC routing, request decoding and response encoding that
//! tonic's generated server would do, done here so that responses are encoded our way.
//!
//! ```text
//!  HTTP/2 request ─► AdsServer::call ─► Streaming<Request> (tonic's decoder) ─► stream task
//!                                                                                  │ responses
//!  HTTP/2 DATA ◄── ResponseBody ◄── mpsc<Bytes> ◄── frame(): one exact buffer per message
//! ```
//!
//! Why not the generated server: its encoder copies every response into one buffer per stream
//! that keeps the capacity of the largest response ever sent (tens of MiB for a big EDS answer,
//! held for the stream's life), and its `DiscoveryResponse` needs a copy of every resource's
//! `Any` per stream before encoding. Here a SotW response is written straight from the
//! snapshot's already-encoded resources into a buffer of exactly its size, released once
//! HTTP/2 has sent it. The bytes are what prost would write for the same `DiscoveryResponse`.
use std::{
    convert::Infallible,
    marker::PhantomData,
    pin::Pin,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use http_body::Frame;
use prost::{encoding, Message};
use tokio::sync::mpsc;
use tonic::{
    body::Body,
    codec::{DecodeBuf, Decoder},
    codegen::Service,
    server::NamedService,
    Status,
};

use super::{protocol::control_plane, sotw::SotwResponse, XdsResource};

/// The gRPC service name of ADS.
pub const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
pub(crate) const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
pub(crate) const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A message that can be written as one gRPC message.
pub(crate) trait Encode {
    fn encoded_len(&self) -> usize;
    fn encode_raw(&self, buf: &mut Vec<u8>);
}

/// One gRPC length-prefixed message (uncompressed) in a buffer of exactly its size.
pub(crate) fn frame(msg: &impl Encode, max_bytes: usize) -> Result<Bytes, Status> {
    let len = msg.encoded_len();
    if len > max_bytes {
        return Err(Status::resource_exhausted(format!(
            "response of {len} bytes is over the limit of {max_bytes}"
        )));
    }
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode_raw(&mut buf);
    debug_assert_eq!(buf.len(), 5 + len, "encoded_len matches what was written");
    Ok(Bytes::from(buf))
}

/// `DiscoveryResponse` fields, numbered as in `discovery.proto`.
const VERSION_INFO: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const CONTROL_PLANE: u32 = 6;

/// A proto3 string field is left out when empty.
fn string_len(tag: u32, s: &String) -> usize {
    if s.is_empty() {
        0
    } else {
        encoding::string::encoded_len(tag, s)
    }
}

fn put_string(tag: u32, s: &String, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        encoding::string::encode(tag, s, buf);
    }
}

/// The length of `r` as an `Any` in field `tag`: `type_url` is field 1, `value` field 2.
fn any_len(tag: u32, r: &XdsResource) -> usize {
    let inner = any_inner_len(r);
    encoding::key_len(tag) + encoding::encoded_len_varint(inner as u64) + inner
}

fn any_inner_len(r: &XdsResource) -> usize {
    let field = |n: usize| {
        if n == 0 {
            0
        } else {
            1 + encoding::encoded_len_varint(n as u64) + n
        }
    };
    field(r.type_url.len()) + field(r.value.len())
}

/// `r` as an `Any` in field `tag`, as prost encodes one.
fn put_any(tag: u32, r: &XdsResource, buf: &mut Vec<u8>) {
    encoding::encode_key(tag, encoding::WireType::LengthDelimited, buf);
    encoding::encode_varint(any_inner_len(r) as u64, buf);
    for (field, bytes) in [(1, r.type_url.as_bytes()), (2, r.value.as_slice())] {
        if !bytes.is_empty() {
            encoding::encode_key(field, encoding::WireType::LengthDelimited, buf);
            encoding::encode_varint(bytes.len() as u64, buf);
            buf.extend_from_slice(bytes);
        }
    }
}

impl Encode for SotwResponse {
    fn encoded_len(&self) -> usize {
        let cp = control_plane().expect("always set");
        string_len(VERSION_INFO, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| any_len(RESOURCES, r))
                .sum::<usize>()
            + string_len(TYPE_URL, &self.type_url)
            + string_len(NONCE, &self.nonce)
            + encoding::message::encoded_len(CONTROL_PLANE, &cp)
    }

    fn encode_raw(&self, buf: &mut Vec<u8>) {
        put_string(VERSION_INFO, &self.version_info, buf);
        for r in self.resources.iter() {
            // The resource's bytes as encoded once for the snapshot, copied, never re-encoded.
            put_any(RESOURCES, r, buf);
        }
        put_string(TYPE_URL, &self.type_url, buf);
        put_string(NONCE, &self.nonce, buf);
        encoding::message::encode(CONTROL_PLANE, &control_plane().expect("always set"), buf);
    }
}

impl Encode for DeltaDiscoveryResponse {
    fn encoded_len(&self) -> usize {
        Message::encoded_len(self)
    }

    fn encode_raw(&self, buf: &mut Vec<u8>) {
        Message::encode_raw(self, buf)
    }
}

/// Decodes requests with prost (what tonic's generated server uses).
pub(crate) struct ProstDecoder<T>(PhantomData<T>);

impl<T> Default for ProstDecoder<T> {
    fn default() -> Self {
        ProstDecoder(PhantomData)
    }
}

impl<T: Message + Default> Decoder for ProstDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        T::decode(buf)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding a request: {e}")))
    }
}

/// The response body of one stream: each message as its task framed it, then the gRPC status
/// as trailers (OK when the task ends, or the error it sent).
pub(crate) struct ResponseBody {
    rx: mpsc::Receiver<Result<Bytes, Status>>,
    done: bool,
}

impl ResponseBody {
    pub fn new(rx: mpsc::Receiver<Result<Bytes, Status>>) -> Self {
        ResponseBody { rx, done: false }
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let status = match ready!(self.rx.poll_recv(cx)) {
            Some(Ok(bytes)) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        // Only fails on a message that is not a valid header value, which ours always are.
        let _ = status.add_header(&mut trailers);
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A gRPC response whose body is `body`.
pub(crate) fn response(body: ResponseBody) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::new(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

/// What the server routes ADS calls to: one method per protocol.
pub(crate) trait Ads: Clone + Send + Sync + 'static {
    fn sotw(&self, req: http::Request<Body>) -> http::Response<Body>;
    fn delta(&self, req: http::Request<Body>) -> http::Response<Body>;
}

/// The ADS service for tonic's server (`Server::builder().add_service(..)`).
#[derive(Clone, Debug)]
pub struct AdsServer<A> {
    ads: A,
}

impl<A> AdsServer<A> {
    pub(crate) fn new(ads: A) -> Self {
        AdsServer { ads }
    }
}

impl<A> NamedService for AdsServer<A> {
    const NAME: &'static str = SERVICE;
}

impl<A: Ads> Service<http::Request<Body>> for AdsServer<A> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let resp = match req.uri().path() {
            SOTW_PATH => self.ads.sotw(req),
            DELTA_PATH => self.ads.delta(req),
            path => Status::unimplemented(format!("no method {path}")).into_http(),
        };
        std::future::ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;

    use super::*;
    use crate::xds::fixtures::{cluster, cluster_v};

    #[test]
    fn sotw_response_is_encoded_as_prost_encodes_it() {
        let resp = SotwResponse {
            version_info: "v1".into(),
            type_url: crate::xds::CLUSTER.into(),
            nonce: "7".into(),
            resources: vec![cluster("a"), cluster_v("b", "2")].into(),
        };
        let prost_resp = DiscoveryResponse {
            version_info: resp.version_info.clone(),
            resources: resp.resources.iter().map(|r| r.any()).collect(),
            type_url: resp.type_url.clone(),
            nonce: resp.nonce.clone(),
            control_plane: control_plane(),
            ..Default::default()
        };
        let framed = frame(&resp, usize::MAX).unwrap();
        let want = prost_resp.encode_to_vec();
        assert_eq!(&framed[5..], want.as_slice());
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(framed[1..5].try_into().unwrap()) as usize,
            want.len()
        );
        // An empty response, as an unsubscribed type gets.
        let empty = SotwResponse {
            version_info: String::new(),
            resources: Vec::new().into(),
            ..resp
        };
        assert_eq!(
            &frame(&empty, usize::MAX).unwrap()[5..],
            DiscoveryResponse {
                type_url: empty.type_url.clone(),
                nonce: empty.nonce.clone(),
                control_plane: control_plane(),
                ..Default::default()
            }
            .encode_to_vec()
            .as_slice()
        );
    }

    #[test]
    fn response_over_the_limit_is_an_error_naming_its_size() {
        let resp = SotwResponse {
            version_info: "v1".into(),
            type_url: crate::xds::CLUSTER.into(),
            nonce: "1".into(),
            resources: vec![cluster("a")].into(),
        };
        let err = frame(&resp, 10).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("limit of 10"), "{}", err.message());
    }
}
