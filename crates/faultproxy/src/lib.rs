//! A fault-injecting TCP proxy that emulates wide-area links between datacenters for tests and benchmarks,
//! since the machines they run on have no kernel traffic shaping (no `tc netem`).
//!
//! A [`Proxy`] accepts connections on one address and forwards each to an upstream address. Its [`Faults`]
//! can be changed at any time and apply at once to every connection:
//!
//! - a one-way delay with jitter, applied per chunk read, which keeps byte order and keeps many chunks in
//!   flight so that throughput is not cut to one chunk per delay;
//! - a cut of either direction or both (a partition): data stops flowing without any error or close, the
//!   proxy stops reading so that TCP back-pressure builds, and everything flows again on heal;
//! - refusing new connections, and resetting the open ones.
//!
//! [`serve_control`] exposes the links over HTTP so that another process can change faults at run time,
//! and the `geostore-faultproxy` binary runs links and that API from the command line.

#![warn(missing_docs)]

mod connection;
mod control;
mod faults;
mod proxy;

pub use connection::{CHUNK_BYTES_MAX, QUEUE_BYTES_MAX};
pub use control::{LinkState, control_router, serve_control};
pub use faults::{Faults, ProxyStats};
pub use proxy::{CONNECTIONS_MAX, Proxy};
