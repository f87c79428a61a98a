//! The lock table's rules, one test each, and its invariants on random command sequences.

use geostore_locks::{Command, Event, LockTable, Outcome, RequestId, Wait};
use proptest::prelude::*;

fn id(client: &str, request: u64) -> RequestId {
    RequestId { client: client.into(), request }
}

fn acquire(client: &str, request: u64, wait: Wait, now_ms: u64) -> Command {
    Command::Acquire { id: id(client, request), name: "job".into(), ttl_ms: 1000, wait, label: client.into(), now_ms }
}

fn outcome(events: &[Event], of: &RequestId) -> Option<Outcome> {
    events.iter().find_map(|event| match event {
        Event::Decided { id, outcome } if id == of => Some(outcome.clone()),
        _ => None,
    })
}

fn granted_token(events: &[Event], of: &RequestId) -> Option<u64> {
    match outcome(events, of) {
        Some(Outcome::Granted(grant)) => Some(grant.token),
        _ => None,
    }
}

#[test]
fn waiters_are_served_first_come_first_served_with_the_releasing_entry_as_token() {
    let mut table = LockTable::new(0);
    assert_eq!(granted_token(&table.apply(1, acquire("a", 1, Wait::Try, 0)), &id("a", 1)), Some(1));
    assert_eq!(
        outcome(&table.apply(2, acquire("b", 1, Wait::Try, 0)), &id("b", 1)),
        Some(Outcome::Busy { holder_token: Some(1) })
    );
    assert_eq!(
        outcome(&table.apply(3, acquire("c", 1, Wait::Until(500), 0)), &id("c", 1)),
        Some(Outcome::Queued { position: 1 })
    );
    assert_eq!(
        outcome(&table.apply(4, acquire("d", 1, Wait::Until(500), 0)), &id("d", 1)),
        Some(Outcome::Queued { position: 2 })
    );
    let release = Command::Release { id: id("a", 2), name: "job".into(), token: 1, note: None, now_ms: 10 };
    let events = table.apply(5, release);
    assert_eq!(outcome(&events, &id("a", 2)), Some(Outcome::Released));
    assert_eq!(granted_token(&events, &id("c", 1)), Some(5), "the first waiter, in the same entry");
    let events =
        table.apply(6, Command::Release { id: id("c", 2), name: "job".into(), token: 5, note: None, now_ms: 20 });
    assert_eq!(granted_token(&events, &id("d", 1)), Some(6));
}

#[test]
fn a_retried_request_is_applied_once() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    // The retry (say, after a leader change) gets the first outcome, not a second grant.
    assert_eq!(granted_token(&table.apply(2, acquire("a", 1, Wait::Try, 0)), &id("a", 1)), Some(1));
    assert_eq!(table.holder("job").unwrap().token, 1);
    table.apply(3, acquire("b", 1, Wait::Until(10_000), 0));
    let release = Command::Release { id: id("a", 2), name: "job".into(), token: 1, note: None, now_ms: 5 };
    table.apply(4, release.clone());
    assert_eq!(table.holder("job").unwrap().token, 4);
    // A retried release must not release b's grant.
    assert_eq!(outcome(&table.apply(5, release), &id("a", 2)), Some(Outcome::Released));
    assert_eq!(table.holder("job").unwrap().token, 4);
}

#[test]
fn a_release_with_a_stale_token_changes_nothing() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    let events =
        table.apply(2, Command::Release { id: id("x", 1), name: "job".into(), token: 7, note: None, now_ms: 0 });
    assert_eq!(outcome(&events, &id("x", 1)), Some(Outcome::NotHolder { current_token: Some(1) }));
    assert_eq!(table.holder("job").unwrap().token, 1);
}

#[test]
fn a_lease_expires_only_by_the_leaders_clock_and_keep_alive_extends_it() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    assert!(table.due(999).is_empty());
    table.apply(2, Command::KeepAlive { name: "job".into(), token: 1, now_ms: 900 });
    // An expiry proposed from an older view (before the keep-alive) does nothing.
    table.apply(3, Command::Expire { name: "job".into(), token: 1, delay_ms: 0, now_ms: 1000 });
    assert_eq!(table.holder("job").unwrap().token, 1);
    assert_eq!(table.due(1900), vec![Command::Expire { name: "job".into(), token: 1, delay_ms: 0, now_ms: 1900 }]);
    let events = table.apply(4, Command::Expire { name: "job".into(), token: 1, delay_ms: 0, now_ms: 1900 });
    assert_eq!(events, vec![Event::Expired { name: "job".into(), token: 1 }, Event::Changed { name: "job".into() }]);
    assert!(table.holder("job").is_none());
}

#[test]
fn a_new_leader_restarts_lease_clocks_and_never_shortens_one() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    table.apply(2, Command::RestartLeases { now_ms: 600 });
    assert_eq!(table.holder("job").unwrap().expires_at_ms, 1600);
    // A leader whose clock is behind cannot shorten it.
    table.apply(3, Command::RestartLeases { now_ms: 100 });
    assert_eq!(table.holder("job").unwrap().expires_at_ms, 1600);
}

#[test]
fn lock_delay_keeps_an_expired_lock_ungranted_then_grants_the_first_waiter() {
    let mut table = LockTable::new(500);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    table.apply(2, acquire("b", 1, Wait::Until(10_000), 0));
    let events = table.apply(3, Command::Expire { name: "job".into(), token: 1, delay_ms: 500, now_ms: 1000 });
    assert_eq!(granted_token(&events, &id("b", 1)), None, "granted during the lock-delay");
    assert!(matches!(
        outcome(&table.apply(4, acquire("c", 1, Wait::Try, 1200)), &id("c", 1)),
        Some(Outcome::Busy { .. })
    ));
    assert!(table.due(1400).iter().all(|c| !matches!(c, Command::EndDelay { .. })));
    assert_eq!(table.due(1500), vec![Command::EndDelay { name: "job".into(), now_ms: 1500 }]);
    assert_eq!(
        granted_token(&table.apply(5, Command::EndDelay { name: "job".into(), now_ms: 1500 }), &id("b", 1)),
        Some(5)
    );
}

#[test]
fn a_waiter_past_its_deadline_times_out_and_is_never_granted() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    table.apply(2, acquire("b", 1, Wait::Until(300), 0));
    table.apply(3, acquire("c", 1, Wait::Until(10_000), 0));
    let give_up = table.due(300).into_iter().find(|c| matches!(c, Command::GiveUp { .. })).unwrap();
    assert_eq!(outcome(&table.apply(4, give_up), &id("b", 1)), Some(Outcome::TimedOut));
    let events =
        table.apply(5, Command::Release { id: id("a", 2), name: "job".into(), token: 1, note: None, now_ms: 400 });
    assert_eq!(granted_token(&events, &id("c", 1)), Some(5));
}

#[test]
fn the_table_round_trips_through_a_snapshot() {
    let mut table = LockTable::new(250);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    table.apply(2, acquire("b", 1, Wait::Until(900), 0));
    let bytes = postcard::to_stdvec(&table).unwrap();
    let mut copy = postcard::from_bytes::<LockTable>(&bytes).unwrap();
    // The lock-delay a member proposes is its own configuration, not replicated state.
    copy.set_lock_delay_ms(250);
    assert_eq!(copy, table);
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let name = prop::sample::select(vec!["x".to_string(), "y".to_string()]);
    let client = prop::sample::select(vec!["a".to_string(), "b".to_string(), "c".to_string()]);
    prop_oneof![
        (client.clone(), 0_u64..6, name.clone(), 1_u64..500, prop::bool::ANY, 0_u64..600).prop_map(
            |(client, request, name, ttl_ms, try_only, deadline)| Command::Acquire {
                id: RequestId { client, request },
                name,
                ttl_ms,
                wait: if try_only { Wait::Try } else { Wait::Until(deadline) },
                label: String::new(),
                now_ms: 0,
            }
        ),
        (client, 0_u64..6, name.clone(), 0_u64..40).prop_map(|(client, request, name, token)| Command::Release {
            note: None,
            id: RequestId { client, request: request + 100 },
            name,
            token,
            now_ms: 0,
        }),
        (name.clone(), 0_u64..40).prop_map(|(name, token)| Command::KeepAlive { name, token, now_ms: 0 }),
        Just(Command::RestartLeases { now_ms: 0 }),
    ]
}

proptest! {
    #[test]
    fn tokens_strictly_increase_and_a_lock_has_one_holder(
        commands in prop::collection::vec((command_strategy(), 0_u64..50), 1..80),
        lock_delay_ms in 0_u64..100,
    ) {
        let mut table = LockTable::new(lock_delay_ms);
        let mut now_ms = 0;
        let mut index = 0;
        let mut last_token = 0;
        for (mut command, advance_ms) in commands {
            now_ms += advance_ms;
            // The leader's clock moves forward; it also proposes whatever is due.
            set_now(&mut command, now_ms);
            let mut batch = table.due(now_ms);
            batch.push(command);
            for command in batch {
                index += 1;
                for event in table.apply(index, command) {
                    if let Event::Decided { outcome: Outcome::Granted(grant), .. } = event {
                        // A retried request repeats an old grant; a new one must be this entry.
                        if grant.token > last_token {
                            prop_assert_eq!(grant.token, index);
                            last_token = grant.token;
                        }
                    }
                }
                for grant in table.grants() {
                    prop_assert!(grant.token <= last_token);
                }
            }
        }
    }
}

fn set_now(command: &mut Command, now: u64) {
    match command {
        Command::Acquire { now_ms, wait, .. } => {
            *now_ms = now;
            if let Wait::Until(deadline) = wait {
                *deadline += now;
            }
        }
        Command::Release { now_ms, .. }
        | Command::KeepAlive { now_ms, .. }
        | Command::Expire { now_ms, .. }
        | Command::GiveUp { now_ms, .. }
        | Command::EndDelay { now_ms, .. }
        | Command::RestartLeases { now_ms } => *now_ms = now,
    }
}

#[test]
fn next_due_is_the_earliest_expiry_deadline_or_delay_end() {
    let mut table = LockTable::new(300);
    assert_eq!(table.next_due_ms(), None, "an empty table never wakes the leader");
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    assert_eq!(table.next_due_ms(), Some(1000), "the lease's expiry");
    table.apply(2, acquire("b", 1, Wait::Until(400), 0));
    assert_eq!(table.next_due_ms(), Some(400), "the waiter's deadline comes first");
    table.apply(3, acquire("c", 1, Wait::Until(5000), 0));
    table.apply(4, Command::GiveUp { id: id("b", 1), name: "job".into(), now_ms: 400 });
    table.apply(5, Command::Expire { name: "job".into(), token: 1, delay_ms: 300, now_ms: 1000 });
    assert_eq!(table.next_due_ms(), Some(1300), "the end of the lock-delay, with a waiter queued");
    assert_eq!(table.due(1300), vec![Command::EndDelay { name: "job".into(), now_ms: 1300 }]);
}

#[test]
fn keep_alive_answers_with_the_new_expiry_or_none_for_a_lost_lease() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    let events = table.apply(2, Command::KeepAlive { name: "job".into(), token: 1, now_ms: 500 });
    assert_eq!(events, vec![Event::KeptAlive { name: "job".into(), token: 1, expires_at_ms: Some(1500) }]);
    let events = table.apply(3, Command::KeepAlive { name: "job".into(), token: 7, now_ms: 600 });
    assert_eq!(events, vec![Event::KeptAlive { name: "job".into(), token: 7, expires_at_ms: None }]);
    let events = table.apply(4, Command::KeepAlive { name: "other".into(), token: 1, now_ms: 600 });
    assert_eq!(events, vec![Event::KeptAlive { name: "other".into(), token: 1, expires_at_ms: None }]);
}

#[test]
fn grants_keep_their_label_and_the_table_round_trips_through_json() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    table.apply(2, acquire("b", 1, Wait::Until(9000), 0));
    assert_eq!(table.holder("job").unwrap().label, "a");
    // Snapshots are JSON: the remembered outcomes (keyed by request id) must survive it.
    let copy: LockTable = serde_json::from_str(&serde_json::to_string(&table).unwrap()).unwrap();
    assert_eq!(copy, table);
    let mut copy = copy;
    let retry = copy.apply(3, acquire("a", 1, Wait::Try, 0));
    assert_eq!(granted_token(&retry, &id("a", 1)), Some(1), "a retry after a snapshot is still applied once");
}

#[test]
fn a_release_note_is_handed_to_the_next_holder() {
    let mut table = LockTable::new(0);
    table.apply(1, acquire("a", 1, Wait::Try, 0));
    table.apply(2, acquire("b", 1, Wait::Until(9000), 0));
    let note = Some("dc0:3:17".to_string());
    let events = table.apply(3, Command::Release { id: id("a", 2), name: "job".into(), token: 1, note, now_ms: 5 });
    match outcome(&events, &id("b", 1)) {
        Some(Outcome::Granted(grant)) => assert_eq!(grant.previous_note.as_deref(), Some("dc0:3:17")),
        other => panic!("b not granted: {other:?}"),
    }
    // The note outlives the lock being free, and a release without a note keeps the last one.
    table.apply(4, Command::Release { id: id("b", 2), name: "job".into(), token: 3, note: None, now_ms: 6 });
    assert!(table.holder("job").is_none());
    let events = table.apply(5, acquire("c", 1, Wait::Try, 7));
    match outcome(&events, &id("c", 1)) {
        Some(Outcome::Granted(grant)) => assert_eq!(grant.previous_note.as_deref(), Some("dc0:3:17")),
        other => panic!("c not granted: {other:?}"),
    }
}

/// Scenario found by the simulation harness (seeds 1181 and 1185 at commit 8284fad): the leader found an
/// expiry due, stamped it with its clock, and proposed it only after an earlier timer entry had waited
/// seconds for a majority. Meanwhile a waiter queued with a later time; the late expiry granted it a
/// lease measured from the older time, already over, and the leader expired it at once and granted the
/// lock again while the waiter believed it held it. Leaders now stamp each timer command as they
/// propose it (`Command::stamped`); this shows why.
#[test]
fn a_timer_command_is_stamped_when_proposed_not_when_found_due() {
    let grant_of = |events: &[Event], who: &RequestId| match outcome(events, who) {
        Some(Outcome::Granted(grant)) => grant,
        other => panic!("expected a grant, got {other:?}"),
    };
    let expire = |now_ms| Command::Expire { name: "job".into(), token: 1, delay_ms: 0, now_ms };
    for (stamp, lease_left_after_request) in [(1_200, 700), (1_600, 1_100)] {
        let mut table = LockTable::new(0);
        table.apply(1, acquire("a", 1, Wait::Try, 0)); // a holds until 1000
        table.apply(2, acquire("b", 1, Wait::Until(5_000), 1_500)); // b asks at 1500 and waits
        // The expiry was found due at 1200; it is applied after b's request either way.
        let command = expire(1_200).stamped(stamp);
        let grant = grant_of(&table.apply(3, command), &id("b", 1));
        assert_eq!(grant.expires_at_ms - 1_500, lease_left_after_request);
    }
    // Stamping never moves a command's time back.
    assert_eq!(expire(1_200).stamped(900).now_ms(), 1_200);
}
