//! The lock group on one node: the Raft group that replicates the lock table ([`geostore_raft::RaftGroup`]
//! of [`LockState`]), its metrics, and the leader's timer loop that proposes lease expiries.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use geostore_locks::Command;
use geostore_model::planted;
use geostore_raft::{GroupConfig, LeaseClock, RaftGroup};
use geostore_runtime::shutdown::{CancellationToken, TaskTracker};
use geostore_storage::Storage;
use openraft::ServerState;

use crate::machine::LockState;
use crate::metrics::GroupMetrics;

/// How this node takes part in the lock group.
#[derive(Debug, Clone)]
pub struct LockGroupConfig {
    /// Members, timing and transport: the Raft machinery's settings.
    pub group: GroupConfig,
    /// How long a lock whose lease expired stays ungranted, in ms (0: none).
    pub lock_delay_ms: u64,
}

impl LockGroupConfig {
    /// Checks what a bad configuration file could get wrong.
    pub fn check(&self) -> Result<(), String> {
        self.group.check().map_err(|message| format!("lock group: {message}"))
    }
}

/// This node's member of the lock group: the Raft group replicating the lock table (whose proposing and
/// state it derefs to) and the group's metrics.
pub struct LockGroup {
    group: Arc<RaftGroup<LockState>>,
    /// The group's Prometheus metrics.
    pub metrics: GroupMetrics,
}

impl Deref for LockGroup {
    type Target = RaftGroup<LockState>;

    fn deref(&self) -> &RaftGroup<LockState> {
        &self.group
    }
}

impl LockGroup {
    /// Starts this node's member of the lock group on `storage` (see [`RaftGroup::start`]). The leader
    /// loop (lease timers, learners) runs on `tasks` until `stop` is cancelled.
    pub async fn start(
        config: LockGroupConfig,
        storage: Arc<dyn Storage>,
        clock: LeaseClock,
        registry: &prometheus::Registry,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> anyhow::Result<Arc<LockGroup>> {
        config.check().map_err(anyhow::Error::msg)?;
        let group = RaftGroup::start(config.group, config.lock_delay_ms, storage, clock).await?;
        let group = Arc::new(LockGroup { group, metrics: GroupMetrics::new(registry) });
        tasks.spawn(leader_loop(group.clone(), stop));
        Ok(group)
    }

    /// The Raft group itself, to serve it in the `Raft` service.
    pub fn raft_group(&self) -> Arc<RaftGroup<LockState>> {
        self.group.clone()
    }
}

/// While this node leads: first restart every lease's clock (a new leader never expires a lease early),
/// add the configured learners, then propose expiries, give-ups and lock-delay ends as they fall due,
/// sleeping until the next one or until an entry is applied.
async fn leader_loop(group: Arc<LockGroup>, stop: CancellationToken) {
    let mut metrics = group.raft().metrics();
    let mut applied = group.shared().subscribe_applied();
    loop {
        let (is_leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader == Some(group.id()) && m.state == ServerState::Leader, m.current_term)
        };
        group.metrics.is_leader.set(i64::from(is_leader));
        group.metrics.term.set(i64::try_from(term).unwrap_or(i64::MAX));
        if !is_leader {
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            continue;
        }
        tracing::info!(id = group.id(), term, "leading the lock group");
        if let Err(error) = group.propose_command(Command::RestartLeases { now_ms: group.now_ms() }).await {
            tracing::warn!(message = error.message, "could not restart leases as a new leader");
            continue;
        }
        group.add_learners().await;
        let mut first_pass = true;
        // Lead until the term changes.
        loop {
            let mut now_ms = group.now_ms();
            if std::mem::take(&mut first_pass) && planted::active(planted::Bug::NewLeaderExpiresLeases) {
                now_ms += 3_600_000;
            }
            let (due, next_due_ms) =
                group.shared().read(|applied| (applied.state.table.due(now_ms), applied.state.table.next_due_ms()));
            for command in due {
                // Found due at `now_ms`; an earlier write in this loop may have waited for a slow commit.
                let command = command.stamped(group.now_ms());
                let expiry = matches!(command, Command::Expire { .. });
                match group.propose_command(command).await {
                    Ok(response) => {
                        let expired = response
                            .events
                            .iter()
                            .filter(|e| matches!(e, geostore_locks::Event::Expired { .. }))
                            .count();
                        group.metrics.expiries.inc_by(expired as u64);
                    }
                    Err(error) if expiry => tracing::debug!(message = error.message, "expiry not proposed"),
                    Err(error) => tracing::debug!(message = error.message, "timer entry not proposed"),
                }
            }
            let sleep = match next_due_ms {
                Some(due_ms) => Duration::from_millis(due_ms.saturating_sub(group.now_ms()).max(1)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                changed = applied.changed() => if changed.is_err() { return },
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            let m = metrics.borrow();
            if m.current_term != term || m.current_leader != Some(group.id()) {
                break;
            }
        }
    }
}
