//! The HTTP side port: `/metrics` (Prometheus text format), `/healthz` (the process is up) and `/readyz`
//! (the node serves requests).

use std::future::Future;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Serves `/metrics` (Prometheus text), `/healthz` and `/readyz` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || async move { metrics.render() }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
