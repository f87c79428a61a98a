//! The harness bites: with a bug planted (a build with `--features planted-bugs`), a sweep from seed 1
//! reports a violation of the invariant that bug breaks within the documented number of seeds
//! (simulations/README.md gives the measured detection rates). Run by `scripts/test` as
//! `cargo test -p geostore-sim --features planted-bugs --test planted`.
#![cfg(feature = "planted-bugs")]

use std::sync::Mutex;

use geostore_model::planted::{self, Bug};
use geostore_sim::plan::profile;
use geostore_sim::world::{Options, run};

/// The planted bug is one per process: these tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The first seed from 1 whose run violates `invariant` with `bug` planted, trying at most `seeds`.
fn first_detection(bug: Bug, invariants: &[&str], seeds: u64) -> Option<u64> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    assert!(planted::plant(Some(bug)));
    let found = (1..=seeds).find(|&seed| {
        let report = run(seed, profile("default").unwrap(), Options::default());
        report.violations.iter().any(|v| invariants.contains(&v.invariant))
    });
    planted::plant(None);
    found
}

#[test]
fn a_disabled_fence_check_loses_lock_protected_updates() {
    let found = first_detection(Bug::FenceCheckOff, &["guarded-no-lost-update", "no-stale-token-survives"], 10);
    assert!(found.is_some(), "no violation in 10 seeds with the fence check off");
}

#[test]
fn a_new_leader_expiring_leases_at_once_breaks_mutual_exclusion() {
    let found = first_detection(Bug::NewLeaderExpiresLeases, &["lock-linearizable"], 10);
    assert!(found.is_some(), "no violation in 10 seeds with new leaders expiring leases");
}

#[test]
fn anti_entropy_skipping_a_key_range_leaves_replicas_apart() {
    let found = first_detection(Bug::AntiEntropySkipsRange, &["converge-after-heal", "no-lost-acknowledged-write"], 30);
    assert!(found.is_some(), "no violation in 30 seeds with anti-entropy skipping a range");
}
