//! The two gRPC methods served without prost's codec: the request reaches its handler as the
//! bytes received (read in place, `grpc::wire`), and the answer is written straight into the
//! response buffer — no message struct decoded or encoded on the answer path. Otherwise the
//! same as tonic's generated servers: the route, the message size limit, UNIMPLEMENTED for any
//! other method of the service.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::wire::{Message, Slice};

/// An answer that writes itself.
pub trait Encoded: Send + 'static {
    /// Writes the message into `out` ([`write`] does it in one copy).
    fn encode(&self, out: &mut EncodeBuf<'_>);
}

/// Writes `message`: into a buffer on the stack when it fits (the usual answer is a few hundred
/// bytes), then into tonic's buffer in one copy.
pub(crate) fn write(out: &mut EncodeBuf<'_>, message: &impl Message) {
    let len = message.encoded_len();
    let mut stack = [0u8; 1024];
    if let Some(buf) = stack.get_mut(..len) {
        let mut s = Slice::new(buf);
        message.encode(&mut s);
        debug_assert_eq!(s.at, len, "the encoded length is the length written");
        out.put_slice(&stack[..len]);
    } else {
        let mut v = Vec::with_capacity(len);
        message.encode(&mut v);
        out.put_slice(&v);
    }
}

/// One unary method whose request arrives as bytes.
pub trait Handler: Send + Sync + 'static {
    /// The gRPC service (`envoy.service.auth.v3.Authorization`).
    const SERVICE: &'static str;
    /// The method's path (`/envoy.service.auth.v3.Authorization/Check`).
    const PATH: &'static str;
    type Answer: Encoded;
    fn handle(
        &self,
        request: Request<Bytes>,
    ) -> impl Future<Output = Result<Self::Answer, Status>> + Send;
}

/// Request bytes in, an [`Encoded`] answer out.
struct RawCodec<A>(PhantomData<fn() -> A>);

impl<A: Encoded> Codec for RawCodec<A> {
    type Encode = A;
    type Decode = Bytes;
    type Encoder = RawCodec<A>;
    type Decoder = RawCodec<A>;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec(PhantomData)
    }
}

impl<A: Encoded> Encoder for RawCodec<A> {
    type Item = A;
    type Error = Status;

    fn encode(&mut self, item: A, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf);
        Ok(())
    }
}

impl<A: Encoded> Decoder for RawCodec<A> {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // The message's bytes, taken from the receive buffer without a copy.
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// A [`Handler`] as a tonic service (what `add_service` takes).
pub struct Served<H> {
    inner: Arc<H>,
    max_decoding_message_size: Option<usize>,
}

impl<H> Served<H> {
    pub fn new(handler: H) -> Self {
        Served {
            inner: Arc::new(handler),
            max_decoding_message_size: None,
        }
    }

    /// Requests larger than `limit` bytes are refused (RESOURCE_EXHAUSTED), as with tonic's
    /// generated servers (4 MiB unless set).
    #[must_use]
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl<H> Clone for Served<H> {
    fn clone(&self) -> Self {
        Served {
            inner: self.inner.clone(),
            max_decoding_message_size: self.max_decoding_message_size,
        }
    }
}

impl<H: Handler> NamedService for Served<H> {
    const NAME: &'static str = H::SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

struct Call<H>(Arc<H>);

impl<H: Handler> UnaryService<Bytes> for Call<H> {
    type Response = H::Answer;
    type Future = BoxFuture<Result<Response<H::Answer>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.handle(request).await.map(Response::new) })
    }
}

impl<H, B> tonic::codegen::Service<http::Request<B>> for Served<H>
where
    H: Handler,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != H::PATH {
            return Box::pin(async { Ok(unimplemented()) });
        }
        let call = Call(self.inner.clone());
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(RawCodec::<H::Answer>(PhantomData))
                .apply_max_message_size_config(max, None);
            Ok(grpc.unary(call, req).await)
        })
    }
}

/// Any other method of the service: UNIMPLEMENTED, as tonic's generated servers answer.
fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::default());
    let headers = response.headers_mut();
    headers.insert(
        "grpc-status",
        http::HeaderValue::from(tonic::Code::Unimplemented as i32),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Check and ShouldRateLimit answered ahead of tonic's router: a request for one of the two
/// methods goes straight to its service; any other goes on to the router (axum), which would
/// otherwise parse the route's parameters and box the call once more for every request (4
/// allocations and a clone of the routed service each). Given to `Server::layer`, so that
/// tonic's per-connection stack (the call timeout, connection info) still wraps it.
pub struct Direct<A, R> {
    a: Served<A>,
    r: Served<R>,
}

impl<A, R> Direct<A, R> {
    pub fn new(a: Served<A>, r: Served<R>) -> Self {
        Direct { a, r }
    }
}

impl<A, R> Clone for Direct<A, R> {
    fn clone(&self) -> Self {
        Direct {
            a: self.a.clone(),
            r: self.r.clone(),
        }
    }
}

impl<A, R, S> tower::Layer<S> for Direct<A, R> {
    type Service = DirectService<A, R, S>;

    fn layer(&self, inner: S) -> Self::Service {
        DirectService {
            direct: self.clone(),
            inner,
        }
    }
}

/// The service [`Direct`] makes of the router.
pub struct DirectService<A, R, S> {
    direct: Direct<A, R>,
    inner: S,
}

impl<A, R, S: Clone> Clone for DirectService<A, R, S> {
    fn clone(&self) -> Self {
        DirectService {
            direct: self.direct.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<A, R, S> tonic::codegen::Service<http::Request<tonic::body::Body>> for DirectService<A, R, S>
where
    A: Handler,
    R: Handler,
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        if path == A::PATH {
            self.direct.a.call(req)
        } else if path == R::PATH {
            self.direct.r.call(req)
        } else {
            Box::pin(self.inner.call(req))
        }
    }
}
