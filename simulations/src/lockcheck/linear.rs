//! The linear checker: each lock's grants sorted by token and swept once, as early as the constraints allow.

use std::collections::{BTreeMap, HashMap};

use super::explain::{duplicate, malformed, out_of_order, overlap, renewal_before_grant};
use super::{AcquireOutcome, Call, LockOp, Violation, lease_end};

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
pub(super) struct Holding {
    pub(super) token: u64,
    pub(super) acquire: Call,
    /// The acknowledged renewal sent last: the holding lasted at least until that send time, and its lease was
    /// guaranteed until that send time + ttl.
    pub(super) latest_renewal: Option<Call>,
    /// The acknowledged renewal that completed first: the token was granted by then.
    pub(super) first_renewal_done: Option<Call>,
    pub(super) releases: Vec<Call>,
}

impl Holding {
    /// The latest instant the grant can have happened: the acquire's completion, or a renewal's if earlier.
    pub(super) fn deadline(&self) -> u64 {
        self.first_renewal_done.map_or(self.acquire.completed, |r| r.completed.min(self.acquire.completed))
    }

    /// Whether the deadline comes from a renewal rather than from the acquire's completion.
    pub(super) fn deadline_is_renewal(&self) -> bool {
        self.first_renewal_done.is_some_and(|r| r.completed < self.acquire.completed)
    }

    /// The latest send time that counts for the lease: the acquire's or the last acknowledged renewal's.
    pub(super) fn lease_sent(&self) -> u64 {
        self.latest_renewal.map_or(self.acquire.invoked, |r| r.invoked.max(self.acquire.invoked))
    }
}

/// The earliest instant something can happen, and the reason it cannot happen earlier.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bound {
    pub(super) at: u64,
    pub(super) why: Why,
}

/// Why a [`Bound`] is what it is; the `usize` is the position of the holding concerned in token order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Why {
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
    pub(super) fn holding(self) -> usize {
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
