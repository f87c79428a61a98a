//! What a simulated node runs on: turmoil's network under geostore's `Dialer` and `Listener`, and a wall
//! clock that follows simulated time, with an offset the fault schedule moves (skew and jumps).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use geostore_proto::net::{Accepted, BoxConn, Dialer, Listener};

/// The port every simulated node serves gRPC on.
pub const NODE_PORT: u16 = 7000;

/// Connects through turmoil's network (hosts are found by name).
pub fn dialer() -> Dialer {
    Dialer::custom(|uri| {
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok(Box::new(stream) as BoxConn)
        })
    })
}

/// Accepts connections on this host's [`NODE_PORT`].
pub async fn listener() -> std::io::Result<Listener> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", NODE_PORT)).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(stream, _)| Accepted(Box::new(stream)));
            if sender.send(accepted).await.is_err() {
                return;
            }
        }
    });
    Ok(Listener::Stream(Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))))
}

/// A node's wall clock: simulated time since the simulation's epoch, plus this node's offset.
#[derive(Clone, Default)]
pub struct SimClock {
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl geostore_model::WallClock for SimClock {
    fn now_unix_ms(&self) -> i64 {
        let since_epoch = turmoil::since_epoch().expect("a node's clock is read inside the simulation");
        i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX) + self.offset_ms()
    }
}
