//! The fault settings of a link and the counters it keeps.

use serde::{Deserialize, Serialize};

/// The faults a link injects. The default injects none: the proxy then forwards bytes as they come.
///
/// Every field defaults when missing from JSON, so a control request can name only the faults it sets;
/// unknown fields are rejected so that a misspelt fault is an error instead of a silent "no fault".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added one-way delay in each direction, in milliseconds (so a round trip gains 2 × delay_ms).
    pub delay_ms: u64,
    /// Uniform random extra delay 0..=jitter_ms per chunk, never reordering bytes within a connection.
    pub jitter_ms: u64,
    /// Client->upstream direction is cut: bytes are held (not read, so TCP back-pressure builds) until healed.
    pub cut_forward: bool,
    /// Upstream->client direction cut likewise.
    pub cut_backward: bool,
    /// New connections are refused (accepted and immediately reset).
    pub refuse_new: bool,
}

impl Faults {
    /// Both directions cut: the link is black-holed, as in a full network partition.
    pub fn black_hole() -> Faults {
        Faults { cut_forward: true, cut_backward: true, ..Faults::default() }
    }

    /// Only a one-way delay (and no other fault), the usual wide-area link.
    pub fn delay(delay_ms: u64) -> Faults {
        Faults { delay_ms, ..Faults::default() }
    }

    pub(crate) fn is_cut(&self, direction: Direction) -> bool {
        match direction {
            Direction::Forward => self.cut_forward,
            Direction::Backward => self.cut_backward,
        }
    }
}

/// The two directions of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From the client that connected to the proxy towards the upstream.
    Forward,
    /// From the upstream back to the client.
    Backward,
}

/// A snapshot of a link's counters, all since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Connections accepted on the listening socket, the refused ones included.
    pub connections_accepted: u64,
    /// Connections reset right after being accepted, because of `refuse_new` or the connection limit.
    pub connections_refused: u64,
    /// Connections open now (accepted, not refused, not yet closed).
    pub connections_open: u64,
    /// Bytes written to the upstream (client->upstream direction).
    pub bytes_forward: u64,
    /// Bytes written back to clients (upstream->client direction).
    pub bytes_backward: u64,
    /// Bytes read from one side and not yet written to the other (waiting out their delay or a cut), both
    /// directions together. Data held back by a cut before it is read is not counted: it is still in the
    /// kernel's socket buffers.
    pub bytes_in_flight: u64,
    /// Open connections reset by `Proxy::reset_connections`.
    pub resets: u64,
}
