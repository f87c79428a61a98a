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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

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

// ---------------------------------------------------------------------------------------------------------------
// The linear checker
// ---------------------------------------------------------------------------------------------------------------

/// Checks `history` against the model (see the module documentation) and returns every violation found; an empty
/// result means the history is linearizable. Runs in `O(n log n)` for `n` calls and never panics.
///
/// # How it works
///
/// For each lock, take the holdings handed out by `Granted` acquires, sorted by token: `t_1 < t_2 < … < t_n`
/// (two grants of one token are a violation of their own). In any linearization the holdings follow each other
/// in token order, so the history is correct exactly when there are instants `g_i` (grant of `t_i`) and `e_i`
/// (end of `t_i`'s holding) with, for every `i`:
///
/// 1. `acquire sent ≤ g_i ≤ acquire completed` (the grant happens inside its call);
/// 2. `g_i ≤ b` for every acknowledged renewal of `t_i` completing at `b`, and `e_i ≥ a` for every one sent at `a`
///    (a renewal takes effect while its token holds the lock, inside its own call);
/// 3. `e_i ≥ g_i`, and either `e_i ≥ L_i` (expiry; `L_i` is `ttl` after the latest send time among `t_i`'s
///    acquire and acknowledged renewals) or `e_i` lies inside some release call of `t_i` (release);
/// 4. `e_i ≤ g_(i+1)` (a grant needs the lock free).
///
/// Every other call changes nothing and fits anywhere in its own interval. Each constraint either confines one
/// variable to fixed ranges (its own call, its renewals, its releases, its lease) or orders it after the
/// previous variable (`g_1 ≤ e_1 ≤ g_2 ≤ …`), and no range depends on the instants chosen (lease ends depend on
/// send times only). So taking every variable as early as the constraints allow, in token order, finds a
/// solution whenever there is one: an earlier value never makes a later one harder. The sweep does exactly that, carrying the earliest instant the lock can be free for the
/// next grant, and reports a violation where a grant's earliest possible instant is after its deadline (the
/// acquire's completion, or an earlier completion of one of its renewals).
///
/// Comparing each grant only with the previous token's release and lease end is *not* enough, for two reasons:
///
/// * The bound carries over: a long lease of `t_1` delays the grant of `t_2`, which cannot end before it began,
///   so `t_3` must also come after `t_1`'s lease even if `t_2` was released at once (test
///   `overlap_with_an_older_token_not_only_the_previous_one`).
/// * A release or renewal is tied to its own holding: a release can end a holding only after its grant, and only
///   after every acknowledged renewal of it. A grant delayed past its token's release, or a renewal acknowledged
///   after the release completed, leaves expiry as the only way out, so `min(release sent, lease end)`
///   underestimates when the lock became free (tests `grant_delayed_past_its_own_release` and
///   `renewal_after_release_proves_the_release_failed`).
///
/// After reporting a violation the sweep restarts at the offending grant, as if it were the first, so a single
/// fault is reported once and faults independent of it are still found. Violations come out by lock name, then
/// malformed records, duplicate tokens, and the sweep's findings in token order.
#[must_use]
pub fn check_linear(history: &[LockOp], ttl_ms: u64) -> Vec<Violation> {
    let mut locks: BTreeMap<&str, LockRecords> = BTreeMap::new();
    for op in history {
        let records = locks.entry(op.lock()).or_default();
        let call = op.span();
        if call.completed < call.invoked {
            records.violations.push(malformed(op));
            continue;
        }
        match *op {
            LockOp::Acquire { outcome: AcquireOutcome::Granted(token), .. } => records.grants.push(Holding {
                token,
                acquire: call,
                latest_renewal: None,
                first_renewal_done: None,
                releases: Vec::new(),
            }),
            LockOp::Acquire { .. } => {}
            LockOp::Renew { token, ok: true, completed: Some(_), .. } => records.renewals.push((token, call)),
            LockOp::Renew { .. } => {}
            LockOp::Release { token, .. } => records.releases.push((token, call)),
        }
    }
    let mut violations = Vec::new();
    for (lock, records) in locks {
        violations.extend(records.check(lock, ttl_ms));
    }
    violations
}

/// The calls on one lock that the linear checker looks at, as read from the history.
#[derive(Default)]
struct LockRecords {
    /// Violations found while reading (malformed records).
    violations: Vec<Violation>,
    grants: Vec<Holding>,
    /// Acknowledged, completed renewals with their token.
    renewals: Vec<(u64, Call)>,
    /// Releases with their token.
    releases: Vec<(u64, Call)>,
}

/// A token handed out by a `Granted` acquire, with what the rest of the history says about its holding.
struct Holding {
    token: u64,
    acquire: Call,
    /// The acknowledged renewal sent last: the holding lasted at least until that send time, and its lease was
    /// guaranteed until that send time + ttl.
    latest_renewal: Option<Call>,
    /// The acknowledged renewal that completed first: the token was granted by then.
    first_renewal_done: Option<Call>,
    releases: Vec<Call>,
}

impl Holding {
    /// The latest instant the grant can have happened: the acquire's completion, or a renewal's if earlier.
    fn deadline(&self) -> u64 {
        self.first_renewal_done.map_or(self.acquire.completed, |r| r.completed.min(self.acquire.completed))
    }

    /// Whether the deadline comes from a renewal rather than from the acquire's completion.
    fn deadline_is_renewal(&self) -> bool {
        self.first_renewal_done.is_some_and(|r| r.completed < self.acquire.completed)
    }

    /// The latest send time that counts for the lease: the acquire's or the last acknowledged renewal's.
    fn lease_sent(&self) -> u64 {
        self.latest_renewal.map_or(self.acquire.invoked, |r| r.invoked.max(self.acquire.invoked))
    }

    /// "token 7 (client 2, acquire sent at 5, completed at 9)".
    fn describe(&self) -> String {
        format!("token {} (client {}, acquire {})", self.token, self.acquire.client, self.acquire.times())
    }

    /// Says how we know the token held the lock by its deadline.
    fn describe_deadline(&self) -> String {
        match self.first_renewal_done {
            Some(r) if self.deadline_is_renewal() => format!(
                "token {} (acquire by client {}, {}) already held the lock at {}, when client {}'s acknowledged \
                 renewal of it completed (renewal {})",
                self.token,
                self.acquire.client,
                self.acquire.times(),
                time(r.completed),
                r.client,
                r.times()
            ),
            _ => format!(
                "token {} was granted to client {} by {} (acquire {})",
                self.token,
                self.acquire.client,
                time(self.acquire.completed),
                self.acquire.times()
            ),
        }
    }
}

/// The earliest instant something can happen, and the reason it cannot happen earlier.
#[derive(Debug, Clone, Copy)]
struct Bound {
    at: u64,
    why: Why,
}

/// Why a [`Bound`] is what it is; the `usize` is the position of the holding concerned in token order.
#[derive(Debug, Clone, Copy)]
enum Why {
    /// The holding's acquire was sent at that time.
    AcquireSent(usize),
    /// The holding's lease was guaranteed until then, and no release could have ended it sooner.
    LeaseEnd(usize),
    /// No release of the holding that could end it was sent before then.
    ReleaseSent(usize),
    /// An acknowledged renewal of the holding was sent then, so it was still held.
    RenewalSent(usize),
}

impl Why {
    /// The position of the holding concerned.
    fn holding(self) -> usize {
        match self {
            Why::AcquireSent(i) | Why::LeaseEnd(i) | Why::ReleaseSent(i) | Why::RenewalSent(i) => i,
        }
    }
}

/// The later of two bounds (the first one on a tie).
fn later(a: Bound, b: Bound) -> Bound {
    if b.at > a.at { b } else { a }
}

impl LockRecords {
    fn check(self, lock: &str, ttl_ms: u64) -> Vec<Violation> {
        let LockRecords { mut violations, mut grants, renewals, releases } = self;
        // Stable: among grants of one token, the one recorded first is kept and the others are reported.
        grants.sort_by_key(|h| h.token);
        let mut holdings: Vec<Holding> = Vec::with_capacity(grants.len());
        for grant in grants {
            match holdings.last() {
                Some(kept) if kept.token == grant.token => violations.push(duplicate(lock, kept, &grant)),
                _ => holdings.push(grant),
            }
        }
        let position: HashMap<u64, usize> = holdings.iter().enumerate().map(|(i, h)| (h.token, i)).collect();
        // Renewals and releases of tokens no Granted acquire handed out are left out (see the module docs).
        for (token, call) in renewals {
            if let Some(holding) = position.get(&token).and_then(|&i| holdings.get_mut(i)) {
                if holding.latest_renewal.is_none_or(|r| call.invoked > r.invoked) {
                    holding.latest_renewal = Some(call);
                }
                if holding.first_renewal_done.is_none_or(|r| call.completed < r.completed) {
                    holding.first_renewal_done = Some(call);
                }
            }
        }
        for (token, call) in releases {
            if let Some(holding) = position.get(&token).and_then(|&i| holdings.get_mut(i)) {
                holding.releases.push(call);
            }
        }
        sweep(lock, &holdings, ttl_ms, &mut violations);
        violations
    }
}

/// Walks the holdings of one lock in token order, granting each as early as possible (see [`check_linear`]).
fn sweep(lock: &str, holdings: &[Holding], ttl_ms: u64, out: &mut Vec<Violation>) {
    // The earliest instant the lock can be free for the next grant; `None` at the start of a chain.
    let mut free_from: Option<Bound> = None;
    // The latest acquire send time in the current chain: a larger token granted before it breaks token order.
    let mut latest_sent: Option<Bound> = None;
    for (i, holding) in holdings.iter().enumerate() {
        let sent = Bound { at: holding.acquire.invoked, why: Why::AcquireSent(i) };
        let deadline = holding.deadline();
        let mut granted = sent;
        if sent.at > deadline {
            // Malformed acquires were set aside, so only a renewal can have completed before the acquire was sent.
            out.push(renewal_before_grant(lock, holding));
            latest_sent = None;
        } else if let Some(free) = free_from {
            if free.at > deadline {
                match latest_sent {
                    Some(earlier) if earlier.at > deadline => out.push(out_of_order(lock, holdings, earlier, i)),
                    _ => out.push(overlap(lock, holdings, ttl_ms, free, i)),
                }
                latest_sent = None;
            } else {
                granted = later(free, sent);
            }
        }
        latest_sent = Some(latest_sent.map_or(sent, |earlier| later(earlier, sent)));
        free_from = Some(earliest_end(holding, i, granted, ttl_ms));
    }
}

/// The earliest instant the holding at position `i`, granted no earlier than `granted`, can have ended.
fn earliest_end(holding: &Holding, i: usize, granted: Bound, ttl_ms: u64) -> Bound {
    let mut from = granted;
    if let Some(renewal) = holding.latest_renewal {
        from = later(from, Bound { at: renewal.invoked, why: Why::RenewalSent(i) });
    }
    let lease = Bound { at: lease_end(holding.lease_sent(), ttl_ms), why: Why::LeaseEnd(i) };
    if from.at >= lease.at {
        return from;
    }
    let mut earliest = lease;
    for release in &holding.releases {
        // A release can end the holding at any instant inside its call that is not before `from`.
        if release.completed >= from.at {
            let end = later(from, Bound { at: release.invoked, why: Why::ReleaseSent(i) });
            if end.at < earliest.at {
                earliest = end;
            }
        }
    }
    earliest
}

fn malformed(op: &LockOp) -> Violation {
    let call = op.span();
    let token = op.token();
    let about = token.map_or_else(String::new, |t| format!(" of token {t}"));
    Violation {
        lock: op.lock().to_string(),
        tokens: token.into_iter().collect(),
        message: format!(
            "malformed record: client {}'s {}{about} completed at {}, before it was sent at {}",
            call.client,
            op.kind(),
            call.completed,
            call.invoked
        ),
    }
}

fn duplicate(lock: &str, kept: &Holding, other: &Holding) -> Violation {
    Violation {
        lock: lock.to_string(),
        tokens: vec![kept.token],
        message: format!(
            "token {} was granted twice: to client {} (acquire {}) and to client {} (acquire {}); a fencing token \
             must be unique per lock",
            kept.token,
            kept.acquire.client,
            kept.acquire.times(),
            other.acquire.client,
            other.acquire.times()
        ),
    }
}

fn renewal_before_grant(lock: &str, holding: &Holding) -> Violation {
    let renewal = holding.first_renewal_done.map_or_else(String::new, |r| {
        format!("client {}'s renewal of token {} ({}) was acknowledged", r.client, holding.token, r.times())
    });
    Violation {
        lock: lock.to_string(),
        tokens: vec![holding.token],
        message: format!(
            "renewal before grant: {renewal} before the acquire that was granted token {} (client {}) was sent at \
             {}; a renewal needs its token to hold the lock",
            holding.token, holding.acquire.client, holding.acquire.invoked
        ),
    }
}

fn out_of_order(lock: &str, holdings: &[Holding], earlier: Bound, i: usize) -> Violation {
    let j = earlier.why.holding();
    let (Some(smaller), Some(larger)) = (holdings.get(j), holdings.get(i)) else {
        return Violation { lock: lock.to_string(), tokens: Vec::new(), message: "tokens out of order".to_string() };
    };
    Violation {
        lock: lock.to_string(),
        tokens: vec![smaller.token, larger.token],
        message: format!(
            "tokens out of real-time order: {}, before client {}'s acquire that was granted the smaller token {} \
             was even sent (at {}); tokens must grow in real-time order",
            larger.describe_deadline(),
            smaller.acquire.client,
            smaller.token,
            smaller.acquire.invoked
        ),
    }
}

fn overlap(lock: &str, holdings: &[Holding], ttl_ms: u64, free: Bound, i: usize) -> Violation {
    let j = free.why.holding();
    let (Some(earlier), Some(later)) = (holdings.get(j), holdings.get(i)) else {
        return Violation { lock: lock.to_string(), tokens: Vec::new(), message: "overlapping holdings".to_string() };
    };
    let because = match free.why {
        Why::LeaseEnd(_) => {
            let sent_by = match earlier.latest_renewal {
                Some(r) if r.invoked > earlier.acquire.invoked => {
                    format!("client {}'s last acknowledged renewal", r.client)
                }
                _ => "the acquire".to_string(),
            };
            let releases = match earlier.releases.len() {
                0 => "no release of it was sent".to_string(),
                n => format!(
                    "none of its {n} release call(s) could have ended it sooner (a release takes effect inside its \
                     own call, after the grant and after every acknowledged renewal)"
                ),
            };
            format!(
                "its lease was guaranteed until then ({sent_by} was sent at {}, ttl {ttl_ms} ms) and {releases}",
                earlier.lease_sent()
            )
        }
        Why::ReleaseSent(_) => format!(
            "its lease was guaranteed until {} (ttl {ttl_ms} ms) and no release of it that could take effect was sent \
             before {}",
            time(lease_end(earlier.lease_sent(), ttl_ms)),
            time(free.at)
        ),
        Why::RenewalSent(_) => "an acknowledged renewal of it was sent then, so it still held the lock".to_string(),
        Why::AcquireSent(_) => "its acquire was sent then".to_string(),
    };
    let between: Vec<String> = holdings.get(j + 1..i).unwrap_or_default().iter().map(|h| h.token.to_string()).collect();
    let between = if between.is_empty() {
        String::new()
    } else {
        format!("; the token(s) in between ({}) had to be granted and end after that, too", between.join(", "))
    };
    Violation {
        lock: lock.to_string(),
        tokens: holdings.get(j..=i).unwrap_or_default().iter().map(|h| h.token).collect(),
        message: format!(
            "overlapping holdings: {}, but {} cannot have stopped holding the lock before {}: {because}{between}",
            later.describe_deadline(),
            earlier.describe(),
            time(free.at)
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The exhaustive checker
// ---------------------------------------------------------------------------------------------------------------

/// Decides by brute force whether `history` is linearizable in the model (see the module documentation).
/// Returns `None` if the history has more than `max_ops` calls, `Some(true)` if it is linearizable and
/// `Some(false)` if not. Meant for small histories (up to about a dozen calls), to test [`check_linear`]: it
/// gives the same verdict on every history, but by an independent method.
///
/// This is a Wing & Gong search. It builds linearizations one call at a time over the whole history (the state
/// holds every lock), trying every call not yet placed next. A call goes at the earliest instant allowed: not
/// before the previous call's instant, nor before its own sending, nor after its completion; and every call not
/// yet placed must still be able to complete after it. A grant on a held lock first lets the holding expire, at
/// its guaranteed lease end at the earliest. Expiries are inserted only there (an expiry matters only to the
/// next grant, and a holding kept longer can still be renewed or released). A release of the holding token
/// branches: it ended the holding, or it failed and changed nothing. Placing every call as early as possible
/// loses nothing, because the lease ends depend only on send times, never on the instants chosen, so an earlier
/// instant never forbids a step that a later one allows. For the same reason, a search state (calls placed,
/// state of every lock) reached at an instant no earlier than a previous visit is not explored again.
///
/// The search keeps its own stack, so it never runs out of call stack whatever `max_ops` is.
#[must_use]
pub fn check_exhaustive(history: &[LockOp], ttl_ms: u64, max_ops: usize) -> Option<bool> {
    if history.len() > max_ops {
        return None;
    }
    let mut lock_index: HashMap<&str, usize> = HashMap::new();
    for op in history {
        let next = lock_index.len();
        lock_index.entry(op.lock()).or_insert(next);
    }
    let granted: HashSet<(&str, u64)> = history
        .iter()
        .filter_map(|op| match *op {
            LockOp::Acquire { ref lock, outcome: AcquireOutcome::Granted(token), .. } => Some((lock.as_str(), token)),
            _ => None,
        })
        .collect();
    let mut steps = Vec::with_capacity(history.len());
    for op in history {
        let call = op.span();
        if call.completed < call.invoked {
            return Some(false);
        }
        let known = |token: u64| granted.contains(&(op.lock(), token));
        let effect = match *op {
            LockOp::Acquire { outcome: AcquireOutcome::Granted(token), invoked, .. } => {
                Effect::Grant { token, lease_end: lease_end(invoked, ttl_ms) }
            }
            LockOp::Renew { token, invoked, ok: true, completed: Some(_), .. } if known(token) => {
                Effect::Renew { token, lease_end: lease_end(invoked, ttl_ms) }
            }
            LockOp::Release { token, .. } if known(token) => Effect::Release { token },
            _ => Effect::Nothing,
        };
        let lock = lock_index.get(op.lock()).copied().unwrap_or_default();
        steps.push(Step { lock, invoked: call.invoked, completed: call.completed, effect });
    }
    Some(search(&steps, lock_index.len()))
}

/// What a call does to its lock when it takes effect.
#[derive(Debug, Clone, Copy)]
enum Effect {
    Grant { token: u64, lease_end: u64 },
    Renew { token: u64, lease_end: u64 },
    Release { token: u64 },
    Nothing,
}

/// A call as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Step {
    lock: usize,
    invoked: u64,
    completed: u64,
    effect: Effect,
}

/// The current holding of a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Held {
    token: u64,
    /// The guaranteed lease end: the holding may expire at or after it.
    lease_end: u64,
}

/// The model state of one lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct LockState {
    holder: Option<Held>,
    /// The largest token granted so far.
    last_token: Option<u64>,
}

impl Effect {
    /// The states the lock can be in after this call takes effect, with the instant it takes effect at, given
    /// that it cannot take effect before `at`.
    fn apply(self, state: LockState, at: u64) -> [Option<(LockState, u64)>; 2] {
        match self {
            Effect::Grant { token, lease_end } => {
                if state.last_token.is_some_and(|last| last >= token) {
                    return [None, None];
                }
                // A held lock must expire first, at its guaranteed lease end at the earliest.
                let at = state.holder.map_or(at, |held| at.max(held.lease_end));
                let next = LockState { holder: Some(Held { token, lease_end }), last_token: Some(token) };
                [Some((next, at)), None]
            }
            Effect::Renew { token, lease_end } => match state.holder {
                Some(held) if held.token == token => {
                    let held = Held { token, lease_end: held.lease_end.max(lease_end) };
                    [Some((LockState { holder: Some(held), ..state }, at)), None]
                }
                _ => [None, None],
            },
            Effect::Release { token } => match state.holder {
                Some(held) if held.token == token => {
                    [Some((LockState { holder: None, ..state }, at)), Some((state, at))]
                }
                _ => [Some((state, at)), None],
            },
            Effect::Nothing => [Some((state, at)), None],
        }
    }
}

/// A partial linearization: which calls are placed, the state of every lock, and the instant of the last call.
struct Node {
    placed: Vec<u64>,
    locks: Vec<LockState>,
    now: u64,
    count: usize,
}

fn is_placed(placed: &[u64], i: usize) -> bool {
    placed.get(i / 64).is_some_and(|word| word & (1 << (i % 64)) != 0)
}

fn search(steps: &[Step], lock_count: usize) -> bool {
    let mut seen: HashMap<(Vec<u64>, Vec<LockState>), u64> = HashMap::new();
    let mut stack = vec![Node {
        placed: vec![0; steps.len().div_ceil(64)],
        locks: vec![LockState::default(); lock_count],
        now: 0,
        count: 0,
    }];
    while let Some(node) = stack.pop() {
        if node.count == steps.len() {
            return true;
        }
        let key = (node.placed.clone(), node.locks.clone());
        if seen.get(&key).is_some_and(|&earliest| earliest <= node.now) {
            continue;
        }
        seen.insert(key, node.now);
        // The two earliest completions among unplaced calls: the call placed next must leave room for all others.
        let mut first: Option<(usize, u64)> = None;
        let mut second = NEVER;
        for (i, step) in steps.iter().enumerate().filter(|&(i, _)| !is_placed(&node.placed, i)) {
            match first {
                Some((_, done)) if step.completed >= done => second = second.min(step.completed),
                _ => {
                    second = first.map_or(second, |(_, done)| done);
                    first = Some((i, step.completed));
                }
            }
        }
        for (i, step) in steps.iter().enumerate().filter(|&(i, _)| !is_placed(&node.placed, i)) {
            let others_done = match first {
                Some((f, _)) if f == i => second,
                Some((_, done)) => done,
                None => NEVER,
            };
            let Some(&state) = node.locks.get(step.lock) else { continue };
            for (next, at) in step.effect.apply(state, node.now.max(step.invoked)).into_iter().flatten() {
                if at > step.completed || at > others_done {
                    continue;
                }
                let mut placed = node.placed.clone();
                if let Some(word) = placed.get_mut(i / 64) {
                    *word |= 1 << (i % 64);
                }
                let mut locks = node.locks.clone();
                if let Some(slot) = locks.get_mut(step.lock) {
                    *slot = next;
                }
                stack.push(Node { placed, locks, now: at, count: node.count + 1 });
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = "L";

    fn granted(client: u32, token: u64, invoked: u64, completed: u64) -> LockOp {
        LockOp::Acquire {
            client,
            lock: LOCK.to_string(),
            invoked,
            completed: Some(completed),
            outcome: AcquireOutcome::Granted(token),
        }
    }

    fn acquire(client: u32, invoked: u64, completed: Option<u64>, outcome: AcquireOutcome) -> LockOp {
        LockOp::Acquire { client, lock: LOCK.to_string(), invoked, completed, outcome }
    }

    fn renew(client: u32, token: u64, invoked: u64, completed: u64, ok: bool) -> LockOp {
        LockOp::Renew { client, lock: LOCK.to_string(), token, invoked, completed: Some(completed), ok }
    }

    fn release(client: u32, token: u64, invoked: u64, completed: Option<u64>) -> LockOp {
        LockOp::Release { client, lock: LOCK.to_string(), token, invoked, completed }
    }

    fn on(lock: &str, mut op: LockOp) -> LockOp {
        match &mut op {
            LockOp::Acquire { lock: l, .. } | LockOp::Renew { lock: l, .. } | LockOp::Release { lock: l, .. } => {
                *l = lock.to_string()
            }
        }
        op
    }

    /// Runs both checkers, asserts they agree, and returns the linear checker's violations.
    fn check(history: &[LockOp], ttl_ms: u64) -> Vec<Violation> {
        let violations = check_linear(history, ttl_ms);
        let exhaustive = check_exhaustive(history, ttl_ms, 16);
        assert_eq!(Some(violations.is_empty()), exhaustive, "checkers disagree on {history:#?}: {violations:#?}");
        violations
    }

    fn assert_one(violations: &[Violation], tokens: &[u64], words: &[&str]) {
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert_eq!(violations[0].tokens, tokens, "{violations:#?}");
        for word in words {
            assert!(violations[0].message.contains(word), "{:?} lacks {word:?}", violations[0].message);
        }
    }

    #[test]
    fn clean_handover_by_release() {
        let history = [granted(1, 5, 0, 10), release(1, 5, 20, Some(25)), granted(2, 9, 22, 30)];
        assert!(check(&history, 1000).is_empty());
    }

    #[test]
    fn release_that_never_completed_may_still_have_ended_the_holding() {
        let history = [granted(1, 5, 0, 10), release(1, 5, 20, None), granted(2, 9, 22, 30)];
        assert!(check(&history, 1000).is_empty());
    }

    #[test]
    fn handover_by_expiry_at_or_after_the_lease_end() {
        for completed in [100, 101] {
            let history = [granted(1, 1, 0, 5), granted(2, 2, 50, completed)];
            assert!(check(&history, 100).is_empty(), "completed at {completed}");
        }
    }

    #[test]
    fn handover_by_expiry_before_the_lease_end() {
        let history = [granted(1, 1, 0, 5), granted(2, 2, 50, 99)];
        let violations = check(&history, 100);
        assert_one(&violations, &[1, 2], &["overlapping", "client 1", "client 2", "until then", "ttl 100", "99"]);
    }

    #[test]
    fn renewal_extends_the_lease() {
        let renewed = [granted(1, 1, 0, 5), renew(1, 1, 60, 65, true), granted(2, 2, 50, 120)];
        let violations = check(&renewed, 100);
        assert_one(&violations, &[1, 2], &["before 160", "renewal was sent at 60"]);
        // The renewed lease ends at 60 + 100.
        let renewed = [granted(1, 1, 0, 5), renew(1, 1, 60, 65, true), granted(2, 2, 50, 160)];
        assert!(check(&renewed, 100).is_empty());
        // A failed keep-alive extends nothing.
        let failed = [granted(1, 1, 0, 5), renew(1, 1, 60, 65, false), granted(2, 2, 50, 120)];
        assert!(check(&failed, 100).is_empty());
    }

    #[test]
    fn overlapping_grants() {
        let history = [granted(1, 1, 0, 5), granted(2, 2, 10, 15)];
        let violations = check(&history, 100);
        assert_one(&violations, &[1, 2], &["overlapping", "no release of it was sent"]);
    }

    #[test]
    fn duplicate_token() {
        let history = [granted(1, 7, 0, 5), release(1, 7, 6, Some(7)), granted(2, 7, 10, 15)];
        let violations = check(&history, 100);
        assert_one(&violations, &[7], &["granted twice", "client 1", "client 2"]);
    }

    #[test]
    fn token_decreasing_in_real_time_order() {
        let history = [granted(1, 20, 0, 10), release(1, 20, 11, Some(12)), granted(2, 10, 20, 30)];
        let violations = check(&history, 100);
        assert_one(&violations, &[10, 20], &["real-time order", "token 20 was granted to client 1 by 10", "at 20"]);
    }

    #[test]
    fn two_locks_are_independent() {
        // Same times, same tokens, different locks: no overlap.
        let history = [on("a", granted(1, 1, 0, 5)), on("b", granted(2, 1, 10, 15))];
        assert!(check(&history, 100).is_empty());
        // A fault on one lock is reported on that lock only.
        let history = [
            on("a", granted(1, 1, 0, 5)),
            on("b", granted(2, 2, 10, 15)),
            on("a", granted(3, 3, 10, 15)),
            on("b", release(2, 2, 20, Some(21))),
            on("b", granted(1, 4, 22, 23)),
        ];
        let violations = check(&history, 100);
        assert_one(&violations, &[1, 3], &["overlapping"]);
        assert_eq!(violations[0].lock, "a");
    }

    #[test]
    fn overlap_with_an_older_token_not_only_the_previous_one() {
        // Token 1's renewal keeps it until 200. Token 2's acquire waits (granted by 210), but token 3 is granted
        // by 120: it overlaps token 1, although token 2's own lease (sent at 10) ended at 110.
        let history =
            [granted(1, 1, 0, 5), renew(1, 1, 100, 105, true), granted(2, 2, 10, 210), granted(3, 3, 20, 120)];
        let violations = check(&history, 100);
        assert_one(&violations, &[1, 2, 3], &["token 1 (client 1", "before 200", "in between (2)"]);
    }

    #[test]
    fn grant_delayed_past_its_own_release() {
        // Token 2 cannot be granted before token 1's lease ends at 100, so its release (sent at 65, completed at
        // 70) came too early to end it: only its lease (sent at 60, until 160) could, after token 3's grant.
        let history =
            [granted(1, 1, 0, 5), granted(2, 2, 60, 200), release(2, 2, 65, Some(70)), granted(3, 3, 110, 120)];
        let violations = check(&history, 100);
        assert_one(&violations, &[2, 3], &["before 160", "none of its 1 release call(s)"]);
    }

    #[test]
    fn renewal_after_release_proves_the_release_failed() {
        let history =
            [granted(1, 1, 0, 5), release(1, 1, 10, Some(20)), renew(1, 1, 30, 35, true), granted(2, 2, 40, 45)];
        let violations = check(&history, 100);
        assert_one(&violations, &[1, 2], &["before 130", "release call"]);
        // Without the renewal the release may have worked.
        let history = [granted(1, 1, 0, 5), release(1, 1, 10, Some(20)), granted(2, 2, 40, 45)];
        assert!(check(&history, 100).is_empty());
    }

    #[test]
    fn renewal_acknowledged_before_the_grant() {
        let history = [renew(1, 1, 0, 3, true), granted(1, 1, 5, 10)];
        let violations = check(&history, 100);
        assert_one(&violations, &[1], &["renewal before grant", "client 1"]);
    }

    #[test]
    fn renewal_completing_early_bounds_the_grant() {
        // The acquire of token 2 completed late, but its renewal completed at 50, inside token 1's lease.
        let history = [granted(1, 1, 0, 5), granted(2, 2, 40, 300), renew(2, 2, 45, 50, true)];
        let violations = check(&history, 100);
        assert_one(&violations, &[1, 2], &["already held the lock at 50"]);
    }

    #[test]
    fn unknown_acquires_neither_cause_nor_excuse_violations() {
        let unknown = acquire(3, 1, None, AcquireOutcome::Unknown);
        assert!(check(&[granted(1, 1, 0, 5), unknown.clone()], 100).is_empty());
        let history = [granted(1, 1, 0, 5), unknown, granted(2, 3, 10, 20)];
        assert_one(&check(&history, 100), &[1, 3], &["overlapping"]);
        // Refused acquires change nothing either.
        let history = [granted(1, 1, 0, 5), acquire(2, 6, Some(7), AcquireOutcome::Refused)];
        assert!(check(&history, 100).is_empty());
    }

    #[test]
    fn calls_on_tokens_never_granted_are_ignored() {
        let history = [granted(1, 1, 0, 5), renew(2, 9, 10, 12, true), release(2, 9, 13, Some(14))];
        assert!(check(&history, 100).is_empty());
    }

    #[test]
    fn malformed_records_are_violations() {
        let history = [granted(1, 1, 10, 5)];
        assert_one(&check(&history, 100), &[1], &["malformed", "completed at 5, before it was sent at 10"]);
        let history = [acquire(1, 10, Some(5), AcquireOutcome::Refused)];
        assert_one(&check(&history, 100), &[], &["malformed"]);
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let max = u64::MAX;
        let history = [
            granted(1, max, max - 1, max),
            granted(2, 0, 0, max),
            renew(1, max, max, max, true),
            release(2, 0, max, None),
            acquire(3, max, None, AcquireOutcome::Granted(max - 1)),
        ];
        for ttl in [0, 1, max] {
            let _ = check(&history, ttl);
        }
        assert!(check(&[], 100).is_empty());
    }

    #[test]
    fn exhaustive_declines_long_histories() {
        let history = [granted(1, 1, 0, 5), granted(2, 2, 200, 205)];
        assert_eq!(check_exhaustive(&history, 100, 1), None);
        assert_eq!(check_exhaustive(&history, 100, 2), Some(true));
    }

    #[test]
    fn violations_render_with_their_lock() {
        let violations = check(&[granted(1, 1, 0, 5), granted(2, 2, 10, 15)], 100);
        assert!(violations[0].to_string().starts_with("lock \"L\": overlapping holdings"));
    }

    // -----------------------------------------------------------------------------------------------------------
    // Randomized cross-check
    // -----------------------------------------------------------------------------------------------------------

    /// xorshift64*: enough randomness for generating histories, and the same sequence on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Uniform in `0..n` (`n > 0`), up to a negligible bias.
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
            self.below(denominator) < numerator
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
            if items.is_empty() { None } else { items.get(self.below(items.len() as u64) as usize).copied() }
        }
    }

    /// What a generated history may contain beyond Granted/Refused acquires and completed calls.
    #[derive(Clone, Copy)]
    struct Scope {
        /// Acquires with unknown outcomes and calls that never completed.
        unknowns: bool,
    }

    /// A history of one lock produced by a correct lock server. The server steps through calls at increasing
    /// instants; every call's interval contains its instant, so the instants witness that the history is
    /// linearizable. The server's leases run `ttl` from the instant a call reached it, never earlier than
    /// from its sending, and a lease past its end expires at a random later step.
    fn correct_history(rng: &mut Rng, lock: &str, max_ops: u64, ttl: u64, scope: Scope) -> Vec<LockOp> {
        let clients = 2 + rng.below(2) as usize;
        let mut now = rng.below(20);
        let mut next_token = 1 + rng.below(4);
        // (token, end of the lease by the server's reckoning)
        let mut holder: Option<(u64, u64)> = None;
        let mut believed: Vec<Option<u64>> = vec![None; clients];
        let mut history = Vec::new();
        for _ in 0..1 + rng.below(max_ops) {
            now += rng.below(40);
            if holder.is_some_and(|(_, end)| now >= end) && rng.chance(2, 3) {
                holder = None;
            }
            let client = rng.below(clients as u64) as usize;
            // Mostly quick calls; some slow ones, like an acquire that waited for the lock.
            let mut latency = || if rng.chance(1, 4) { rng.below(150) } else { rng.below(12) };
            let (before, after) = (latency(), latency());
            let invoked = now.saturating_sub(before);
            let lost = scope.unknowns && rng.chance(1, 6);
            let completed = if lost { None } else { Some(now + after) };
            let lock = lock.to_string();
            let id = client as u32;
            let op = match believed.get(client).copied().flatten() {
                None => {
                    let mut outcome = AcquireOutcome::Refused;
                    if holder.is_none() {
                        holder = Some((next_token, now + ttl));
                        outcome = AcquireOutcome::Granted(next_token);
                        next_token += 1 + rng.below(3);
                    }
                    if lost || (scope.unknowns && rng.chance(1, 8)) {
                        outcome = AcquireOutcome::Unknown;
                    }
                    if let (AcquireOutcome::Granted(token), Some(slot)) = (outcome, believed.get_mut(client)) {
                        *slot = Some(token);
                    }
                    LockOp::Acquire { client: id, lock, invoked, completed, outcome }
                }
                Some(token) if rng.chance(1, 2) => {
                    let ok = match &mut holder {
                        Some((held, end)) if *held == token => {
                            *end = (*end).max(now + ttl);
                            true
                        }
                        _ => false,
                    };
                    if !ok && let Some(slot) = believed.get_mut(client) {
                        *slot = None;
                    }
                    LockOp::Renew { client: id, lock, token, invoked, completed, ok: ok && !lost }
                }
                Some(token) => {
                    if holder.is_some_and(|(held, _)| held == token) {
                        holder = None;
                    }
                    if let Some(slot) = believed.get_mut(client) {
                        *slot = None;
                    }
                    LockOp::Release { client: id, lock, token, invoked, completed }
                }
            };
            history.push(op);
        }
        history
    }

    const MUTATIONS: [&str; 6] = [
        "shift a completion earlier",
        "swap tokens",
        "drop a release",
        "grant a refused acquire",
        "acknowledge a failed renewal",
        "shift an invocation",
    ];

    /// Applies one random mutation that fits the history; returns its index in [`MUTATIONS`].
    fn mutate(rng: &mut Rng, history: &mut Vec<LockOp>) -> Option<usize> {
        let indices = |history: &[LockOp], keep: &dyn Fn(&LockOp) -> bool| -> Vec<usize> {
            history.iter().enumerate().filter(|(_, op)| keep(op)).map(|(i, _)| i).collect()
        };
        for _ in 0..20 {
            let kind = rng.below(MUTATIONS.len() as u64) as usize;
            match kind {
                0 => {
                    let Some(i) = rng.pick(&indices(history, &|op| op.completed().is_some())) else { continue };
                    let Some(op) = history.get_mut(i) else { continue };
                    let invoked = op.invoked();
                    let completed = op.completed().unwrap_or(invoked);
                    // Rarely before the invocation, to exercise malformed records.
                    let shifted = if rng.chance(1, 20) {
                        invoked.checked_sub(1 + rng.below(5))
                    } else {
                        Some(invoked + rng.below(completed.saturating_sub(invoked) + 1))
                    };
                    let Some(shifted) = shifted else { continue };
                    match op {
                        LockOp::Acquire { completed, .. }
                        | LockOp::Renew { completed, .. }
                        | LockOp::Release { completed, .. } => *completed = Some(shifted),
                    }
                }
                1 => {
                    let grants = indices(history, &|op| {
                        matches!(op, LockOp::Acquire { outcome: AcquireOutcome::Granted(_), .. })
                    });
                    let (Some(a), Some(b)) = (rng.pick(&grants), rng.pick(&grants)) else { continue };
                    let (Some(ta), Some(tb)) = (history[a].token(), history[b].token()) else { continue };
                    if ta == tb {
                        continue;
                    }
                    for (i, token) in [(a, tb), (b, ta)] {
                        if let LockOp::Acquire { outcome, .. } = &mut history[i] {
                            *outcome = AcquireOutcome::Granted(token);
                        }
                    }
                }
                2 => {
                    let Some(i) = rng.pick(&indices(history, &|op| matches!(op, LockOp::Release { .. }))) else {
                        continue;
                    };
                    history.remove(i);
                }
                3 => {
                    let refused =
                        indices(history, &|op| matches!(op, LockOp::Acquire { outcome: AcquireOutcome::Refused, .. }));
                    let Some(i) = rng.pick(&refused) else { continue };
                    let tokens: Vec<u64> = history.iter().filter_map(LockOp::token).collect();
                    let base = rng.pick(&tokens).unwrap_or(1);
                    let token = (base + rng.below(4)).saturating_sub(1);
                    if let LockOp::Acquire { outcome, .. } = &mut history[i] {
                        *outcome = AcquireOutcome::Granted(token);
                    }
                }
                4 => {
                    let failed =
                        indices(history, &|op| matches!(op, LockOp::Renew { ok: false, completed: Some(_), .. }));
                    let Some(i) = rng.pick(&failed) else { continue };
                    if let LockOp::Renew { ok, .. } = &mut history[i] {
                        *ok = true;
                    }
                }
                _ => {
                    let Some(i) = rng.pick(&indices(history, &|_| true)) else { continue };
                    let delta = rng.below(60);
                    match &mut history[i] {
                        LockOp::Acquire { invoked, completed, .. }
                        | LockOp::Renew { invoked, completed, .. }
                        | LockOp::Release { invoked, completed, .. } => {
                            // Later, but not past the completion; or earlier.
                            *invoked = if rng.chance(1, 2) {
                                (*invoked + delta).min(completed.unwrap_or(NEVER))
                            } else {
                                invoked.saturating_sub(delta)
                            };
                        }
                    }
                }
            }
            return Some(kind);
        }
        None
    }

    /// A simpler check, kept to show why [`check_linear`] does more: distinct tokens, tokens growing
    /// in real-time order, and each grant compared only with the previous token's earliest release send time
    /// and lease end. Malformed records fail it too, so that it differs from the exact check only in those rules.
    fn consecutive_only_verdict(history: &[LockOp], ttl: u64) -> bool {
        if history.iter().any(|op| op.completed().is_some_and(|done| done < op.invoked())) {
            return false;
        }
        let mut grants: Vec<(u64, u64, u64)> = history
            .iter()
            .filter_map(|op| match *op {
                LockOp::Acquire { invoked, completed, outcome: AcquireOutcome::Granted(t), .. } => {
                    Some((t, invoked, completed.unwrap_or(NEVER)))
                }
                _ => None,
            })
            .collect();
        grants.sort();
        let in_order =
            grants.iter().all(|&(a, _, a_done)| grants.iter().all(|&(b, b_sent, _)| a_done >= b_sent || a < b));
        let calls = |token: u64| history.iter().filter(move |op| op.token() == Some(token));
        in_order
            && grants.windows(2).all(|pair| {
                let ((a, a_sent, _), (b, _, b_done)) = (pair[0], pair[1]);
                let renewed = calls(a)
                    .filter_map(|op| match *op {
                        LockOp::Renew { invoked, ok: true, completed: Some(_), .. } => Some(invoked),
                        _ => None,
                    })
                    .fold(a_sent, u64::max);
                let released = calls(a)
                    .filter(|op| matches!(op, LockOp::Release { .. }))
                    .map(LockOp::invoked)
                    .min()
                    .unwrap_or(NEVER);
                a != b && b_done >= released.min(lease_end(renewed, ttl))
            })
    }

    /// What a randomized cross-check saw, over the mutated histories (the correct ones must all pass).
    #[derive(Debug, Default)]
    struct Tally {
        passing: usize,
        failing: usize,
        /// Failing histories that had each mutation of [`MUTATIONS`] applied (alone or with others).
        failing_with: [usize; MUTATIONS.len()],
        /// Histories the simpler [`consecutive_only_verdict`] accepts although they are not linearizable.
        simpler_missed: usize,
        /// Linearizable histories the simpler check rejects.
        simpler_rejected: usize,
    }

    /// Generates `rounds` correct histories on `locks` and asserts both checkers accept them; mutates each with
    /// one to three mutations and asserts both checkers give the mutated history the same verdict.
    fn cross_check(seed: u64, rounds: usize, scope: Scope, locks: &[&str]) -> Tally {
        let mut rng = Rng(seed);
        let mut tally = Tally::default();
        let per_lock = if locks.len() == 1 { 8 } else { 6 };
        for round in 0..rounds {
            let ttl = 20 + rng.below(60);
            let mut history = Vec::new();
            for lock in locks {
                history.extend(correct_history(&mut rng, lock, per_lock, ttl, scope));
            }
            let violations = check_linear(&history, ttl);
            assert!(violations.is_empty(), "round {round}: correct history rejected: {history:#?}\n{violations:#?}");
            assert_eq!(check_exhaustive(&history, ttl, 16), Some(true), "round {round}: {history:#?}");

            let mut mutated = history.clone();
            let mut applied = Vec::new();
            for _ in 0..1 + rng.below(3) {
                applied.extend(mutate(&mut rng, &mut mutated));
            }
            let violations = check_linear(&mutated, ttl);
            let exhaustive = check_exhaustive(&mutated, ttl, 16);
            assert_eq!(
                Some(violations.is_empty()),
                exhaustive,
                "round {round}: checkers disagree (ttl {ttl}, mutations {applied:?}) on {mutated:#?}\n{violations:#?}"
            );
            if violations.is_empty() {
                tally.passing += 1;
            } else {
                tally.failing += 1;
                applied.sort_unstable();
                applied.dedup();
                for kind in applied {
                    if let Some(count) = tally.failing_with.get_mut(kind) {
                        *count += 1;
                    }
                }
            }
            if locks.len() == 1 && !scope.unknowns {
                match (consecutive_only_verdict(&mutated, ttl), violations.is_empty()) {
                    (true, false) => tally.simpler_missed += 1,
                    (false, true) => tally.simpler_rejected += 1,
                    _ => {}
                }
            }
        }
        tally
    }

    /// Asserts the cross-check saw enough of everything not to pass vacuously.
    fn assert_varied(tally: &Tally, rounds: usize) {
        assert!(tally.passing > rounds / 10, "too few mutated histories passed: {tally:?}");
        assert!(tally.failing > rounds / 10, "too few mutated histories failed: {tally:?}");
        for (kind, count) in tally.failing_with.iter().enumerate() {
            assert!(*count > 20, "mutation {:?} is in too few failing histories: {tally:?}", MUTATIONS[kind]);
        }
    }

    #[test]
    fn randomized_cross_check_single_lock() {
        let rounds = 20_000;
        let tally = cross_check(0x5eed_1234_abcd_0001, rounds, Scope { unknowns: false }, &[LOCK]);
        eprintln!("single lock, Granted/Refused and completed calls, {rounds} rounds: {tally:?}");
        assert_varied(&tally, rounds);
        // The simpler check is too permissive on some of them; that is what the exact sweep is for.
        assert!(tally.simpler_missed > 0, "{tally:?}");
    }

    #[test]
    fn randomized_cross_check_with_unknowns_and_two_locks() {
        let rounds = 10_000;
        for (seed, locks) in [(0x0dd_ba11_u64, &["a"][..]), (0xfee1_600d, &["a", "b"][..])] {
            let tally = cross_check(seed, rounds, Scope { unknowns: true }, locks);
            eprintln!("locks {locks:?} with unknown outcomes and unfinished calls, {rounds} rounds: {tally:?}");
            assert_varied(&tally, rounds);
        }
    }
}
