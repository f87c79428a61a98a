//! Regression tests for the bugs the simulation found.
//!
//! Each bug has scripted scenarios: plans built with [`Plan::scripted`] from faults, times, sync policies
//! and latencies written out here, so that a change to the random plan generator cannot quietly stop a
//! test from building the situation its bug needed. Each scripted test asserts that the situation did
//! arise (the events the bug needed happened, at the times it needed them) before it asserts that no
//! invariant was violated. The workload is still drawn from the plan's application seeds, so a change to
//! the workload changes which calls meet the faults, never whether the faults happen.
//!
//! The seeds that first found the bugs are run too (they are cheap), but a seed replays the same run only
//! at the same commit: at a later commit it may no longer reach the bug's situation at all.

use geostore_sim::history::{Call, Outcome};
use geostore_sim::plan::{Fault, Plan, Scheduled, profile};
use geostore_sim::world::{Options, Report, run, run_plan};

fn assert_no_violations(report: &Report, what: &str) {
    assert!(report.violations.is_empty(), "{what}: {:#?}", report.violations);
    assert!(report.ops.len() > 100, "{what} ran only {} operations", report.ops.len());
}

fn passes(seed: u64) {
    let report = run(seed, profile("default").unwrap(), Options::default());
    assert_no_violations(&report, &format!("seed {seed} (replay: cargo run -p geostore-sim -- replay {seed} --trace)"));
}

fn sometimes(report: &Report, name: &str) -> u64 {
    report.sometimes.get(name).copied().unwrap_or_else(|| panic!("no sometimes-counter {name:?}"))
}

// ---------------------------------------------------------------------------------------------------------
// The lock group stamped timer commands when it found them due, not when it proposed them
// ---------------------------------------------------------------------------------------------------------

/// The leader's timer loop found several expiries due and wrote them one after the other. When the first
/// waited seconds for a majority, the next was appended behind acquires that arrived meanwhile, still
/// carrying the time it was found due; the entry that freed the lock granted it to the next waiter with a
/// lease measured from that old time, already over, so the leader expired it at once and granted the lock
/// again while the waiter believed it held it (fixed: `Command::stamped`; seeds 1181 and 1185 at 8284fad;
/// unit test in crates/locks/tests/lock_table.rs).
///
/// The scenarios: two runs that found the bug with it reintroduced at a later commit (seeds 1185 and 23
/// at a71699f; seed 1181 no longer reaches the situation there), their plans written out: the faults and
/// their times, the latencies, the sync policies and the seeds of the network, of the elections and of
/// each application, as the random generator drew them. Nothing comes from the generator any more, so
/// changing it cannot change these runs; a change to the workload or the node code can, which is why each
/// test asserts the situation: leases running out, holders stalling, and locks handed over in the
/// seconds after the fault where the bug granted a lock twice (a node crash and restart in the first,
/// reordered messages at a site in the second). With `Command::stamped` undone, both fail with
/// overlapping holdings (lock-linearizable).
fn stale_stamp_after_a_crash() -> Plan {
    let faults = vec![
        Scheduled::new(4_681, 3_541, Fault::Pause { site: 2 }),
        Scheduled::new(9_972, 1_426, Fault::Delay { a: 0, b: 2, extra_ms: 932 }),
        Scheduled::new(14_385, 3_911, Fault::MinorityPartition { site: 2 }),
        Scheduled::new(20_469, 3_922, Fault::IsolateSite { site: 1 }),
        Scheduled::new(25_632, 1_753, Fault::Crash { site: 2, power_loss: true }),
        Scheduled::new(29_017, 5_222, Fault::ClockSkew { site: 0, offset_ms: -2_012 }),
        Scheduled::new(31_892, 1_985, Fault::Pause { site: 0 }),
        Scheduled::new(31_892, 9_012, Fault::ClockJump { site: 0, offset_ms: 21_294 }),
        Scheduled::new(36_307, 2_811, Fault::MinorityPartition { site: 1 }),
        Scheduled::new(43_239, 2_265, Fault::Crash { site: 0, power_loss: false }),
        Scheduled::new(47_449, 3_162, Fault::Bridge { middle: 1 }),
        Scheduled::new(54_112, 3_806, Fault::Delay { a: 0, b: 2, extra_ms: 749 }),
    ];
    Plan::scripted(1185, profile("default").unwrap(), [16, 57, 56], [true; 3], faults).with_seeds(
        11_155_300_190_723_530_158,
        16_009_711_505_048_799_054,
        vec![
            15_003_421_819_571_753_236,
            9_435_983_883_325_100_235,
            11_237_320_630_147_010_698,
            3_624_293_025_820_608_838,
            4_382_401_344_360_110_375,
            12_395_005_259_361_859_287,
        ],
    )
}

fn stale_stamp_after_reordering() -> Plan {
    let faults = vec![
        Scheduled::new(4_722, 2_477, Fault::Bridge { middle: 0 }),
        Scheduled::new(9_657, 2_061, Fault::Reorder { site: 0 }),
        Scheduled::new(14_296, 3_652, Fault::IsolateSite { site: 2 }),
        Scheduled::new(20_284, 3_911, Fault::MinorityPartition { site: 2 }),
        Scheduled::new(22_269, 8_978, Fault::ClockSkew { site: 1, offset_ms: -384 }),
        Scheduled::new(26_354, 3_896, Fault::Pause { site: 0 }),
        Scheduled::new(31_255, 3_699, Fault::Pause { site: 2 }),
        Scheduled::new(37_486, 9_100, Fault::ClockSkew { site: 1, offset_ms: -254 }),
        Scheduled::new(38_950, 2_351, Fault::Bridge { middle: 0 }),
        Scheduled::new(42_385, 4_097, Fault::Crash { site: 0, power_loss: false }),
        Scheduled::new(47_137, 3_955, Fault::Reorder { site: 1 }),
        Scheduled::new(52_757, 3_379, Fault::Pause { site: 1 }),
    ];
    Plan::scripted(23, profile("default").unwrap(), [24, 70, 26], [true, true, false], faults).with_seeds(
        15_991_203_481_769_936_214,
        2_674_147_800_654_935_832,
        vec![
            16_633_129_931_985_352_644,
            15_733_919_954_802_499_897,
            13_667_680_551_382_208_863,
            12_951_152_030_030_909_819,
            16_938_859_612_800_271_970,
            10_644_937_258_966_936_709,
        ],
    )
}

/// Runs a stale-stamp scenario and asserts that leases ran out, holders stalled and at least two locks
/// were granted by acquires completing inside `window_ms` (simulated ms), then that nothing was violated.
fn run_stale_stamp(plan: &Plan, window_ms: (u64, u64)) {
    let report = run_plan(plan, Options::default());
    let what = format!("scripted stale-stamp scenario (seed {})", plan.seed);
    assert!(sometimes(&report, "lease expired") > 0, "{what}: no lease expired");
    assert!(sometimes(&report, "holder stalled") > 0, "{what}: no holder stalled");
    let granted_in_window = report
        .ops
        .iter()
        .filter(|op| matches!(op.call, Call::Acquire { token: Some(_), .. }))
        .filter(|op| op.completed_ms.is_some_and(|done| (window_ms.0..window_ms.1).contains(&done)))
        .count();
    assert!(granted_in_window >= 2, "{what}: {granted_in_window} grants in {window_ms:?} ms");
    assert_no_violations(&report, &what);
}

#[test]
fn scripted_stale_expiry_stamp_after_a_node_crash() {
    // With the bug, the double grant came 0-2 s after node 0 restarted (at 45.5 s).
    run_stale_stamp(&stale_stamp_after_a_crash(), (45_500, 48_500));
}

#[test]
fn scripted_stale_expiry_stamp_after_reordering() {
    // With the bug, the double grant came 0-2 s after site 0's links stopped reordering (at 11.7 s).
    run_stale_stamp(&stale_stamp_after_reordering(), (11_700, 14_300));
}

#[test]
fn seed_1181_lock_group_stale_expiry_stamp() {
    passes(1181);
}

#[test]
fn seed_1185_lock_group_stale_expiry_stamp() {
    passes(1185);
}

// ---------------------------------------------------------------------------------------------------------
// After a power loss without fsync, the node reused what its lost tail had handed out
// ---------------------------------------------------------------------------------------------------------

/// With `sync = "none"` a power loss dropped the unsynced tail, and the node came back reusing the log
/// sequences, HLC timestamps and replica id the lost records had used; writes it acknowledged after the
/// restart were lost (a set add, a register put, a protected write: seeds 47, 2103, 2120 at 8284fad).
/// A first fix moved the log head into the gap and the log server spun on a head with no record (seed
/// 1003, two power losses of one node seconds apart). Fixed: a new incarnation after an unclean restart;
/// unit test `after_a_power_loss_without_fsync_nothing_handed_out_is_handed_out_again` in the store.
///
/// The scenario: the run that found the set add lost (seed 47, which still finds it at a71699f with the
/// new incarnation undone), its plan written out as the generator drew it: dc0 and dc2 run without fsync
/// and dc2 loses power at 14.6 s, among other faults. The test asserts the situation: the power loss
/// dropped unsynced writes and dc2 acknowledged set adds after it restarted (the writes the bug lost).
/// With the recovery's lossy-restart handling switched off, it fails with no-lost-acknowledged-write.
/// Seeds 2103 and 1003 did not fail that way at a71699f, so their plans are not pinned here.
fn power_loss_then_set_adds() -> Plan {
    let faults = vec![
        Scheduled::new(4_259, 3_127, Fault::Pause { site: 2 }),
        Scheduled::new(9_830, 3_529, Fault::LeaderKill),
        Scheduled::new(14_561, 2_229, Fault::Crash { site: 2, power_loss: true }),
        Scheduled::new(22_304, 2_019, Fault::Crash { site: 0, power_loss: false }),
        Scheduled::new(25_981, 3_740, Fault::OneWay { from: 2, to: 1 }),
        Scheduled::new(30_658, 3_796, Fault::Loss { a: 1, b: 2, rate_per_mille: 5 }),
        Scheduled::new(37_692, 2_194, Fault::Pause { site: 2 }),
        Scheduled::new(44_924, 1_420, Fault::OneWay { from: 2, to: 0 }),
        Scheduled::new(47_609, 3_279, Fault::Loss { a: 2, b: 1, rate_per_mille: 3 }),
        Scheduled::new(50_687, 5_331, Fault::ClockSkew { site: 0, offset_ms: -1_838 }),
        Scheduled::new(51_733, 2_137, Fault::ClockSkew { site: 2, offset_ms: 3 }),
        Scheduled::new(54_073, 2_284, Fault::OneWay { from: 2, to: 1 }),
    ];
    Plan::scripted(47, profile("default").unwrap(), [31, 22, 30], [false, true, false], faults).with_seeds(
        15_368_707_135_031_746_617,
        1_651_137_399_926_190_818,
        vec![
            4_779_970_166_032_704_999,
            15_127_469_214_005_847_123,
            10_402_369_414_408_963_334,
            12_428_562_617_860_186_705,
            14_365_287_994_949_241_352,
            16_917_846_736_794_085_220,
        ],
    )
}

#[test]
fn scripted_power_loss_without_fsync_then_set_adds() {
    let plan = power_loss_then_set_adds();
    let report = run_plan(&plan, Options::default());
    let what = "scripted power-loss scenario (seed 47)";
    assert_eq!(report.faults.get("power-loss"), Some(&1), "{what}: {:?}", report.faults);
    assert!(sometimes(&report, "unsynced batches lost") > 0, "{what}: nothing unsynced was lost");
    assert_eq!(sometimes(&report, "checks relaxed by a sync=none power loss"), 1, "{what}");
    // dc2 was back at 16.79 s; set adds it acknowledged from then on needed fresh dots.
    let set_adds_after = report
        .ops
        .iter()
        .filter(|op| op.site == 2 && op.outcome == Outcome::Ok && matches!(op.call, Call::SetAdd { .. }))
        .filter(|op| op.invoked_ms >= 16_790)
        .count();
    assert!(set_adds_after >= 3, "{what}: dc2 acknowledged {set_adds_after} set adds after restarting");
    assert_no_violations(&report, what);
}

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
