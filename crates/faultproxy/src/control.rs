//! The HTTP control API, so that another process (a test driver, a benchmark script) can change a link's
//! faults while it runs:
//!
//! - `GET /links`: every link with its addresses, faults and counters, as a JSON array.
//! - `GET /links/{name}`: one link, as a JSON object.
//! - `PUT /links/{name}/faults`: replaces the link's faults with the JSON `Faults` body (missing fields
//!   default to no fault) and answers with the link.
//! - `POST /links/{name}/reset`: resets every open connection of the link and answers with the link.
//!
//! An unknown link answers 404 with `{"error": "..."}`; a malformed body answers 400 or 422 (axum's `Json`).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::faults::{Faults, ProxyStats};
use crate::proxy::Proxy;

/// What the control API reports about one link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// The link's name, as used in the control API's paths.
    pub name: String,
    /// The address the link's proxy accepts connections on.
    pub listen: SocketAddr,
    /// The address it forwards each connection to.
    pub upstream: SocketAddr,
    /// The faults in force on the link now.
    pub faults: Faults,
    /// What the link has carried and dropped since it started.
    pub stats: ProxyStats,
}

impl LinkState {
    /// The state of `proxy`, reported under `name`, as of now.
    pub fn of(name: &str, proxy: &Proxy) -> LinkState {
        LinkState {
            name: name.to_owned(),
            listen: proxy.local_addr(),
            upstream: proxy.upstream(),
            faults: proxy.faults(),
            stats: proxy.stats(),
        }
    }
}

/// Links by name, sorted so that `GET /links` lists them in a stable order.
type Links = Arc<BTreeMap<String, Proxy>>;

/// The control API's routes over `links`; for serving them next to other routes.
///
/// Fails with `InvalidInput` when two links have the same name, since requests could not tell them apart.
pub fn control_router(links: Vec<(String, Proxy)>) -> io::Result<Router> {
    let mut by_name = BTreeMap::new();
    for (name, proxy) in links {
        if by_name.contains_key(&name) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("two links are named {name:?}")));
        }
        by_name.insert(name, proxy);
    }
    Ok(Router::new()
        .route("/links", get(list_links))
        .route("/links/{name}", get(get_link))
        .route("/links/{name}/faults", put(put_faults))
        .route("/links/{name}/reset", post(reset_link))
        .with_state(Arc::new(by_name)))
}

/// Serves the control API for `links` on `listener` until `shutdown` completes.
pub async fn serve_control(
    listener: TcpListener,
    links: Vec<(String, Proxy)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = control_router(links)?;
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn list_links(State(links): State<Links>) -> Json<Vec<LinkState>> {
    Json(links.iter().map(|(name, proxy)| LinkState::of(name, proxy)).collect())
}

async fn get_link(State(links): State<Links>, Path(name): Path<String>) -> Response {
    with_link(&links, &name, |_| {})
}

async fn put_faults(State(links): State<Links>, Path(name): Path<String>, Json(faults): Json<Faults>) -> Response {
    with_link(&links, &name, |proxy| proxy.set_faults(faults))
}

async fn reset_link(State(links): State<Links>, Path(name): Path<String>) -> Response {
    with_link(&links, &name, Proxy::reset_connections)
}

/// Applies `action` to the link called `name` and answers with its state afterwards, or 404.
fn with_link(links: &Links, name: &str, action: impl FnOnce(&Proxy)) -> Response {
    match links.get(name) {
        Some(proxy) => {
            action(proxy);
            Json(LinkState::of(name, proxy)).into_response()
        }
        None => {
            let error = serde_json::json!({ "error": format!("no link named {name:?}") });
            (StatusCode::NOT_FOUND, Json(error)).into_response()
        }
    }
}
