//! Hand-written histories, each checked by both checkers (which must agree) and by the linear checker's
//! message.

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
    let history = [granted(1, 1, 0, 5), renew(1, 1, 100, 105, true), granted(2, 2, 10, 210), granted(3, 3, 20, 120)];
    let violations = check(&history, 100);
    assert_one(&violations, &[1, 2, 3], &["token 1 (client 1", "before 200", "in between (2)"]);
}

#[test]
fn grant_delayed_past_its_own_release() {
    // Token 2 cannot be granted before token 1's lease ends at 100, so its release (sent at 65, completed at
    // 70) came too early to end it: only its lease (sent at 60, until 160) could, after token 3's grant.
    let history = [granted(1, 1, 0, 5), granted(2, 2, 60, 200), release(2, 2, 65, Some(70)), granted(3, 3, 110, 120)];
    let violations = check(&history, 100);
    assert_one(&violations, &[2, 3], &["before 160", "none of its 1 release call(s)"]);
}

#[test]
fn renewal_after_release_proves_the_release_failed() {
    let history = [granted(1, 1, 0, 5), release(1, 1, 10, Some(20)), renew(1, 1, 30, 35, true), granted(2, 2, 40, 45)];
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
