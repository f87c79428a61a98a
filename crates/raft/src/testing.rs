//! A small machine for the tests of the machinery (its own unit tests, its integration tests against
//! openraft's storage suite, and the tests of crates that build on it): a counter that adds what each
//! command says.

use serde::{Deserialize, Serialize};

use crate::Machine;

/// The count of every command applied, and their sum.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Commands applied.
    pub commands: u64,
    /// Their sum.
    pub total: u64,
}

impl Machine for Counter {
    const GROUP: &'static str = "counter";
    const KEY_PREFIX: &'static [u8] = b"counter/";
    type Proposal = u64;
    /// What to add, and the leader's time.
    type Command = (u64, u64);
    /// The total after the command.
    type Event = u64;
    type Local = ();
    type Observer = ();

    fn command(proposal: u64, now_ms: u64) -> (u64, u64) {
        (proposal, now_ms)
    }

    fn apply(&mut self, _index: u64, (add, _now_ms): (u64, u64)) -> Vec<u64> {
        self.commands += 1;
        self.total = self.total.saturating_add(add);
        vec![self.total]
    }

    fn localize(&mut self, _local: &()) {}

    fn replaced_by(&self, _next: &Self) -> Vec<u64> {
        Vec::new()
    }

    fn observe(_observer: &(), _events: &[u64]) {}
}
