//! Checks a recorded history of lock calls against a model of a mutex with leases and fencing tokens.
//!
//! geostore's global locks are granted by a Raft group. Every grant carries a *fencing token* (the log index
//! of the granting entry, so the tokens of one lock only ever grow, though not one by one) and a *lease*: the
//! holder keeps the lock while it sends keep-alives and may lose it `ttl` after the last one. The deterministic
//! simulation records every lock call its clients make, with the simulated millisecond the call was sent
//! (`invoked`) and the one its answer arrived (`completed`, `None` if it never did). This module answers one
//! question about such a record: could a correct lock service have produced it?
//!
//! Two checkers answer it, with the same verdict on every history:
//!
//! * [`check_linear`] sorts the grants of each lock by token and sweeps them once, in `O(n log n)`; it reports
//!   each violation with the clients, tokens and times involved. This is the one to run on simulation output.
//! * [`check_exhaustive`] searches all orders in which the calls could have taken effect (Wing & Gong). It is
//!   exponential and only meant for small histories: the tests use it to check [`check_linear`].
//!
//! # The model
//!
//! Locks are independent of each other: a history is correct if the calls on each lock are. A lock is free or
//! held by one token, and changes only through these steps:
//!
//! * **grant of token `t`**: allowed only while the lock is free, and only if `t` is larger than every token
//!   granted on this lock before. The holding's *guaranteed lease end* becomes `acquire sent + ttl`.
//! * **renewal of `t`** (a keep-alive the server acknowledged): allowed only while `t` holds the lock. The
//!   guaranteed lease end becomes at least `renewal sent + ttl`.
//! * **release of `t`**: ends the holding of `t` if `t` holds the lock, and otherwise changes nothing.
//! * **expiry**: ends the current holding, at any instant at or after its guaranteed lease end.
//!
//! Nothing else ends a holding. Leases count from when the client *sent* its call, as geostore's client
//! library does, so the guarantee never depends on how long an answer took. The lock-delay (the pause before a
//! grant that follows an expiry) only makes grants later, so it cannot make a history wrong and is not modelled.
//!
//! # Linearization
//!
//! A history is correct if every call can be given one instant at which it took effect, inside its own interval
//! `[invoked, completed]` (both ends included), so that stepping the model through the calls in the order of
//! their instants (calls at the same instant in some order, expiries inserted wherever allowed) never makes a
//! forbidden step. Including both ends means that when one call completes in the very millisecond another is
//! sent, either may have taken effect first. A call that never completed may take effect at any instant from
//! its sending on.
//!
//! How each record is read:
//!
//! * `Acquire` with `Granted(t)`: a grant of `t`.
//! * `Acquire` with `Refused`: nothing happened.
//! * `Acquire` with `Unknown` (completed or not): nothing happened. Such an acquire may have granted a token
//!   nobody learned, but "nothing happened" is always one of its possibilities, and the most permissive one:
//!   had it granted a token, that holding would have had to fit between the others, which only adds
//!   constraints. So an unknown acquire never causes a violation; for the same reason it can never excuse one
//!   either: two `Granted` holdings that overlap, overlap whatever the unknown acquire did.
//! * `Renew` with `ok` that completed: a renewal of `token`, checked strictly. The acknowledgement proves that
//!   `token` held the lock at the instant the renewal took effect. So a renewal acknowledged before the token's
//!   acquire was even sent is a violation, and a renewal sent after a release of the token has completed proves
//!   that the release did not end the holding (it failed), so only the lease could end it.
//! * `Renew` without `ok`, or that never completed: nothing happened. A failed keep-alive has no effect, and one
//!   whose answer never arrived may have failed.
//! * `Release`: a release of `token`, or nothing. The record carries no answer, and a lost answer may hide a
//!   success, so the release may have ended the holding at any instant inside its call (but not before the
//!   grant, nor before an acknowledged renewal of the token took effect), or not at all.
//! * A `Renew` or `Release` of a token that no `Granted` acquire of that lock handed out: nothing happened. The
//!   token could only come from an acquire whose outcome the recorder never learned; placing that holding
//!   could add violations but never remove one, so ignoring it keeps the checkers free of false alarms.
//! * A completed call whose `completed` is before its `invoked` cannot take effect anywhere: the history is
//!   reported as malformed.
//!
//! With these readings the two checkers agree on every history, including ones with unknown outcomes, calls
//! that never completed, several locks and malformed records; there is no case where they may legitimately
//! differ, apart from [`check_exhaustive`] declining histories longer than its limit. The randomized tests
//! cross-check both kinds: histories of Granted/Refused acquires and completed calls on one lock, and histories
//! with unknown outcomes, unfinished calls and two locks.

//! # Where the code is
//!
//! * this file: the records ([`LockOp`], [`AcquireOutcome`]), [`Violation`] and the helpers both checkers use;
//! * `linear.rs`: [`check_linear`], the sweep over each lock's grants in token order;
//! * `explain.rs`: the messages of the violations the linear checker reports;
//! * `exhaustive.rs`: [`check_exhaustive`], the Wing & Gong search;
//! * `tests.rs`: hand-written histories, each run through both checkers;
//! * `cross_check.rs`: generated histories (correct ones, then mutated) on which both checkers must agree.

use std::fmt;

mod exhaustive;
mod explain;
mod linear;

#[cfg(test)]
mod cross_check;
#[cfg(test)]
mod tests;

pub use exhaustive::check_exhaustive;
pub use linear::check_linear;

/// One client's interaction with one lock, times in simulated milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOp {
    /// An acquire: `outcome` is Granted(token) (the client learned it holds the lock with that fencing
    /// token), Refused (certainly not granted, e.g. a try-acquire that found the lock held, or a timeout
    /// the server reported as failed), or Unknown (the client does not know: it may have been granted).
    Acquire { client: u32, lock: String, invoked: u64, completed: Option<u64>, outcome: AcquireOutcome },
    /// A keep-alive of the lease of `token`, sent at `invoked`. `ok` = the server said the lease was
    /// extended (so it lasts at least ttl_ms from `invoked`). A keep-alive that failed has no effect.
    Renew { client: u32, lock: String, token: u64, invoked: u64, completed: Option<u64>, ok: bool },
    /// A release of `token` sent at `invoked`. Whatever its answer, the holding may have ended at any point
    /// from `invoked` on (a release is idempotent and a lost answer may hide a success).
    Release { client: u32, lock: String, token: u64, invoked: u64, completed: Option<u64> },
}

/// What the client learned from an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcquireOutcome {
    /// The client holds the lock with this fencing token.
    Granted(u64),
    /// Certainly not granted.
    Refused,
    /// The client does not know whether it was granted (and if it was, with which token).
    Unknown,
}

impl LockOp {
    /// The lock the call is about.
    pub fn lock(&self) -> &str {
        match self {
            LockOp::Acquire { lock, .. } | LockOp::Renew { lock, .. } | LockOp::Release { lock, .. } => lock,
        }
    }

    /// The client that made the call.
    pub fn client(&self) -> u32 {
        match *self {
            LockOp::Acquire { client, .. } | LockOp::Renew { client, .. } | LockOp::Release { client, .. } => client,
        }
    }

    /// When the call was sent.
    pub fn invoked(&self) -> u64 {
        match *self {
            LockOp::Acquire { invoked, .. } | LockOp::Renew { invoked, .. } | LockOp::Release { invoked, .. } => {
                invoked
            }
        }
    }

    /// When the answer arrived, if it did.
    pub fn completed(&self) -> Option<u64> {
        match *self {
            LockOp::Acquire { completed, .. } | LockOp::Renew { completed, .. } | LockOp::Release { completed, .. } => {
                completed
            }
        }
    }

    /// The fencing token the call is about, if the client knows it.
    pub fn token(&self) -> Option<u64> {
        match *self {
            LockOp::Acquire { outcome: AcquireOutcome::Granted(token), .. } => Some(token),
            LockOp::Acquire { .. } => None,
            LockOp::Renew { token, .. } | LockOp::Release { token, .. } => Some(token),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            LockOp::Acquire { .. } => "acquire",
            LockOp::Renew { .. } => "renewal",
            LockOp::Release { .. } => "release",
        }
    }

    /// The call's interval, with [`NEVER`] for a call that never completed.
    fn span(&self) -> Call {
        Call { client: self.client(), invoked: self.invoked(), completed: self.completed().unwrap_or(NEVER) }
    }
}

/// A way in which a history breaks the model, for one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The lock whose calls break the model.
    pub lock: String,
    /// The fencing tokens involved, smallest first (empty if the violating call has no token).
    pub tokens: Vec<u64>,
    /// What is wrong, naming the clients, tokens and times involved.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock {:?}: {}", self.lock, self.message)
    }
}

/// Stands for "never" where a time is expected: a call that never completed is treated as completing at the end
/// of time, and a lease end that would overflow is the end of time too.
const NEVER: u64 = u64::MAX;

/// The guaranteed end of a lease last extended by a call sent at `sent`.
fn lease_end(sent: u64, ttl_ms: u64) -> u64 {
    sent.saturating_add(ttl_ms)
}

/// Renders a time for a message.
fn time(at: u64) -> String {
    if at == NEVER { "the end of time".to_string() } else { at.to_string() }
}

/// One call reduced to who made it and when; `completed` is [`NEVER`] for a call that never completed.
#[derive(Debug, Clone, Copy)]
struct Call {
    client: u32,
    invoked: u64,
    completed: u64,
}

impl Call {
    /// "sent at 5, completed at 9" (or "never completed").
    fn times(&self) -> String {
        if self.completed == NEVER {
            format!("sent at {}, never completed", self.invoked)
        } else {
            format!("sent at {}, completed at {}", self.invoked, self.completed)
        }
    }
}
