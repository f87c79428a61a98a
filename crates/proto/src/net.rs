//! How a process opens connections to other nodes and accepts theirs: TCP in production, or any other
//! byte stream (the simulation harness's network). Every gRPC channel in geostore is made through a
//! [`Dialer`], and a node serves on a [`Listener`], so the same services run over either.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connected byte stream.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

pub type BoxConn = Box<dyn Conn>;

/// A connection being opened.
pub type DialFuture = Pin<Box<dyn Future<Output = io::Result<BoxConn>> + Send>>;

/// Opens connections to the `http://HOST:PORT` URIs of other nodes.
#[derive(Clone, Default)]
pub enum Dialer {
    /// The operating system's TCP.
    #[default]
    Tcp,
    /// Anything else that can connect to a URI.
    Custom(Arc<dyn Fn(Uri) -> DialFuture + Send + Sync>),
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dialer::Tcp => f.write_str("Dialer::Tcp"),
            Dialer::Custom(_) => f.write_str("Dialer::Custom"),
        }
    }
}

impl Dialer {
    pub fn custom(dial: impl Fn(Uri) -> DialFuture + Send + Sync + 'static) -> Self {
        Dialer::Custom(Arc::new(dial))
    }

    /// A channel connected now (the endpoint's connect timeout applies).
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self {
            Dialer::Tcp => endpoint.connect().await,
            Dialer::Custom(dial) => endpoint.connect_with_connector(connector(dial.clone())).await,
        }
    }

    /// A channel that connects on first use and again after failures.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self {
            Dialer::Tcp => endpoint.connect_lazy(),
            Dialer::Custom(dial) => endpoint.connect_with_connector_lazy(connector(dial.clone())),
        }
    }
}

fn connector(
    dial: Arc<dyn Fn(Uri) -> DialFuture + Send + Sync>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<BoxConn>,
    Error = io::Error,
    Future = impl Future<Output = io::Result<TokioIo<BoxConn>>> + Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |uri: Uri| {
        let connecting = dial(uri);
        async move { connecting.await.map(TokioIo::new) }
    })
}

/// A connection a [`Listener::Stream`] accepted.
pub struct Accepted(pub BoxConn);

impl Connected for Accepted {
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for Accepted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Where a node accepts connections.
pub enum Listener {
    /// A bound TCP listener.
    Tcp(tokio::net::TcpListener),
    /// Connections from anything else.
    Stream(Pin<Box<dyn tokio_stream::Stream<Item = io::Result<Accepted>> + Send>>),
}
