//! How a process opens connections to other nodes and accepts theirs: TCP in production, or any other
//! byte stream (the simulation harness's network). Every gRPC channel in geostore is made through a
//! [`Dialer`], and a node serves on a [`Listener`], so the same services run over either.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::outcome::NotConnected;

/// A connected byte stream.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// A connection of any kind, as a [`Dialer`] returns it.
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
    /// A dialer that opens every connection with `dial` (the simulation's network, say) instead of TCP.
    pub fn custom(dial: impl Fn(Uri) -> DialFuture + Send + Sync + 'static) -> Self {
        Dialer::Custom(Arc::new(dial))
    }

    /// A channel connected now, giving up after `connect_timeout`.
    ///
    /// A failure to connect, here or when a channel reconnects, is reported as
    /// [`NotConnected`], which is how a caller knows from data that a call
    /// failing with it was never sent. Set no connect timeout on `endpoint` itself: tonic's would report a
    /// timeout as a plain error.
    pub async fn connect(
        &self,
        endpoint: Endpoint,
        connect_timeout: Duration,
    ) -> Result<Channel, tonic::transport::Error> {
        endpoint.connect_with_connector(self.connector(connect_timeout)).await
    }

    /// A channel that connects on first use and again after failures (see [`Dialer::connect`]).
    pub fn connect_lazy(&self, endpoint: Endpoint, connect_timeout: Duration) -> Channel {
        endpoint.connect_with_connector_lazy(self.connector(connect_timeout))
    }

    fn connector(
        &self,
        connect_timeout: Duration,
    ) -> impl tower::Service<
        Uri,
        Response = TokioIo<BoxConn>,
        Error = NotConnected,
        Future = impl Future<Output = Result<TokioIo<BoxConn>, NotConnected>> + Send,
    > + Send
    + Clone
    + 'static {
        let dialer = self.clone();
        tower::service_fn(move |uri: Uri| {
            let connecting = dialer.dial(uri);
            async move {
                match tokio::time::timeout(connect_timeout, connecting).await {
                    Ok(Ok(conn)) => Ok(TokioIo::new(conn)),
                    Ok(Err(error)) => Err(NotConnected(error)),
                    Err(_) => Err(NotConnected(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {connect_timeout:?}"),
                    ))),
                }
            }
        })
    }

    fn dial(&self, uri: Uri) -> DialFuture {
        match self {
            Dialer::Tcp => Box::pin(async move {
                let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in URI"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = uri.port_u16().unwrap_or(80);
                let stream = tokio::net::TcpStream::connect((host, port)).await?;
                // Requests are small and latency matters more than packet count.
                stream.set_nodelay(true)?;
                Ok(Box::new(stream) as BoxConn)
            }),
            Dialer::Custom(dial) => dial(uri),
        }
    }
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
