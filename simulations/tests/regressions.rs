//! Seeds that found bugs, run again on every test run. A seed replays the same run only at the same
//! commit (the workload and the code change what a seed does), so each bug also has a scripted test
//! next to its fix; these runs keep the situations that exposed them in the suite.

use geostore_sim::plan::profile;
use geostore_sim::world::{Options, run};

fn passes(seed: u64) {
    let report = run(seed, profile("default").unwrap(), Options::default());
    assert!(
        report.violations.is_empty(),
        "seed {seed}: {:#?}\nreplay: cargo run -p geostore-sim -- replay {seed} --trace",
        report.violations
    );
    assert!(report.ops.len() > 100, "seed {seed} ran only {} operations", report.ops.len());
}

/// A late timer entry granted a lease measured from an old time (fixed: timer commands are stamped when
/// proposed; see crates/locks/tests/lock_table.rs).
#[test]
fn seed_1181_lock_group_stale_expiry_stamp() {
    passes(1181);
}

#[test]
fn seed_1185_lock_group_stale_expiry_stamp() {
    passes(1185);
}

/// After a power loss without fsync, the node reused what its lost tail had handed out (fixed: a new
/// incarnation; see crates/node/src/store.rs).
#[test]
fn seed_47_power_loss_without_fsync_set_add() {
    passes(47);
}

#[test]
fn seed_2103_power_loss_without_fsync_register() {
    passes(2103);
}

#[test]
fn seed_1003_power_loss_without_fsync_log_gap() {
    passes(1003);
}
