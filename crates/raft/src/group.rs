//! A Raft group on one node: the openraft instance, and proposing (here if this node leads, forwarded to
//! the leader otherwise). What a leader does on its own (the lock group's lease timers) is the machine's
//! crate's: it drives it through [`RaftGroup::propose_command`] and the openraft metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use geostore_proto::net::Dialer;
use geostore_proto::v1 as pb;
use geostore_proto::v1::raft_client::RaftClient;
use geostore_runtime::Backoff;
use geostore_storage::Storage;
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::storage::RaftLogStorage;
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::network::{Network, lazy_channel};
use crate::store::{LogStore, Shared, StateMachine, check_prefix};
use crate::{Machine, Member, NodeId, Raft, Response};

/// The first and the longest pause between attempts to propose while the leader changes.
const PROPOSE_RETRY_FIRST: Duration = Duration::from_millis(10);
const PROPOSE_RETRY_MAX: Duration = Duration::from_millis(200);

/// A member of the group as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// The member's id in the group (unique, not 0).
    pub id: NodeId,
    /// Its site and endpoint.
    pub member: Member,
    /// Voters elect the leader and make the majority; learners follow the log (and can serve requests
    /// by forwarding them).
    pub voter: bool,
}

/// Raft timing. The defaults suit sites about 80 ms apart: a heartbeat well inside the election timeout,
/// and an election timeout of several round trips, so a slow link does not cause needless elections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How often the leader sends heartbeats, in ms.
    pub heartbeat_ms: u64,
    /// The shortest time a follower waits without hearing from a leader before it stands, in ms.
    pub election_timeout_min_ms: u64,
    /// The longest such wait, in ms (each follower picks at random between the two).
    pub election_timeout_max_ms: u64,
}

impl Timing {
    /// The defaults (also what `geostore node --help` shows for the `--raft-*` flags).
    pub const DEFAULT: Timing =
        Timing { heartbeat_ms: 250, election_timeout_min_ms: 1250, election_timeout_max_ms: 2500 };
}

impl Default for Timing {
    fn default() -> Self {
        Timing::DEFAULT
    }
}

/// How this node takes part in a group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// This node's member id.
    pub id: NodeId,
    /// Every member, this node included (the same list on every member).
    pub members: Vec<MemberConfig>,
    /// Heartbeat and election timing.
    pub timing: Timing,
    /// A snapshot is taken after this many entries (and the log before it purged).
    pub snapshot_every: u64,
    /// Write the Raft log in the calling task instead of on its flusher thread (the simulation).
    pub inline_log: bool,
    /// How this node connects to the other members.
    pub dialer: Dialer,
}

impl GroupConfig {
    /// Checks what a bad configuration file could get wrong.
    pub fn check(&self) -> Result<(), String> {
        if !self.members.iter().any(|m| m.id == self.id) {
            return Err(format!("this node's id {} is not among the members", self.id));
        }
        let mut ids: Vec<NodeId> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return Err("two members with the same id".into());
        }
        if self.members.iter().filter(|m| m.voter).count() == 0 {
            return Err("no voters".into());
        }
        let timing = self.timing;
        if timing.heartbeat_ms == 0 || timing.election_timeout_min_ms <= timing.heartbeat_ms * 2 {
            return Err("the election timeout must be more than twice the heartbeat".into());
        }
        if timing.election_timeout_max_ms <= timing.election_timeout_min_ms {
            return Err("election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if self.snapshot_every == 0 {
            return Err("snapshot_every must be positive".into());
        }
        Ok(())
    }
}

/// The leader's clock: wall-clock milliseconds at start, advanced by a monotonic clock, so that leases
/// are not shortened by a jump of the wall clock. (tokio's clock, so a simulation can drive it.)
#[derive(Debug, Clone, Copy)]
pub struct LeaseClock {
    start_wall_ms: u64,
    start: tokio::time::Instant,
}

impl LeaseClock {
    /// Anchored at `wall_ms`, the wall clock's reading now.
    pub fn new(wall_ms: u64) -> Self {
        LeaseClock { start_wall_ms: wall_ms, start: tokio::time::Instant::now() }
    }

    /// Milliseconds since the Unix epoch by this clock.
    pub fn now_ms(&self) -> u64 {
        self.start_wall_ms + u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why a proposal did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// Certainly not applied (no leader could take it).
    #[error("{0} (not applied)")]
    Failed(String),
    /// May have been applied: a retry with the same request id is safe.
    #[error("{0} (may have been applied)")]
    Unknown(String),
}

/// This node's member of the group that replicates `M`: its Raft instance, the state it applies, and the
/// code that proposes requests to the leader (here or elsewhere), stamped with the leader's clock.
pub struct RaftGroup<M: Machine> {
    id: NodeId,
    network: Network,
    raft: Raft<M>,
    shared: Arc<Shared<M>>,
    clock: LeaseClock,
    /// The configured learners, which the leader adds ([`RaftGroup::add_learners`]).
    learners: Vec<MemberConfig>,
    /// Channels to the other members, for forwarding proposals.
    channels: Mutex<HashMap<String, Channel>>,
    /// How long to wait for a leader to be elected before failing a request.
    leader_wait: Duration,
}

impl<M: Machine> RaftGroup<M> {
    /// Opens the group's log and state machine in `storage` (under `M`'s key prefix; the state given this
    /// node's `local` settings) and starts Raft. A voter whose log is empty and that has never voted
    /// initializes the group with the configured members (every voter may: it is the same membership; a
    /// voter that lost that race is refused quietly).
    pub async fn start(
        config: GroupConfig,
        local: M::Local,
        storage: Arc<dyn Storage>,
        clock: LeaseClock,
    ) -> anyhow::Result<Arc<RaftGroup<M>>> {
        config.check().map_err(|message| anyhow::anyhow!("{} group: {message}", M::GROUP))?;
        check_prefix::<M>().map_err(anyhow::Error::msg)?;
        let raft_config = openraft::Config {
            cluster_name: format!("geostore-{}", M::GROUP),
            heartbeat_interval: config.timing.heartbeat_ms,
            election_timeout_min: config.timing.election_timeout_min_ms,
            election_timeout_max: config.timing.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 1000,
            ..openraft::Config::default()
        }
        .validate()?;
        let mut log = LogStore::open_with(storage.clone(), config.inline_log)?;
        // Only a member that has never voted nor logged anything initializes: asking openraft on a restart
        // would be refused anyway, and openraft logs the refusal as an error.
        let fresh = log.get_log_state().await?.last_log_id.is_none() && log.read_vote().await?.is_none();
        let machine = StateMachine::<M>::open(storage, local)?;
        let shared = machine.shared();
        let network = Network {
            group: M::GROUP,
            routes: Arc::new(config.members.iter().map(|m| (m.id, m.member.endpoint.clone())).collect()),
            dialer: config.dialer.clone(),
        };
        let raft = Raft::new(config.id, Arc::new(raft_config), network.clone(), log, machine).await?;
        let voters: BTreeMap<NodeId, Member> =
            config.members.iter().filter(|m| m.voter).map(|m| (m.id, m.member.clone())).collect();
        if fresh && voters.contains_key(&config.id) {
            match raft.initialize(voters).await {
                Ok(()) => tracing::info!(group = M::GROUP, id = config.id, "group initialized"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(error) => return Err(anyhow::anyhow!("{} group: cannot initialize: {error}", M::GROUP)),
            }
        }
        Ok(Arc::new(RaftGroup {
            id: config.id,
            network,
            raft,
            shared,
            clock,
            learners: config.members.into_iter().filter(|m| !m.voter).collect(),
            channels: Mutex::new(HashMap::new()),
            leader_wait: Duration::from_millis(config.timing.election_timeout_max_ms * 3),
        }))
    }

    /// This node's member id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The openraft instance (for its metrics and the Raft service).
    pub fn raft(&self) -> &Raft<M> {
        &self.raft
    }

    /// The applied state and its observer, as this member has applied the log.
    pub fn shared(&self) -> &Arc<Shared<M>> {
        &self.shared
    }

    /// Now by the lease clock (milliseconds since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Stops Raft (the node is shutting down).
    pub async fn shutdown(&self) {
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(group = M::GROUP, %error, "group did not shut down cleanly");
        }
    }

    /// Proposes `proposal` to the leader (this node or another) and returns what applying it produced.
    /// Retried across leader changes, so every proposal of `M` must be idempotent (the lock group's
    /// acquires and releases carry request ids; a keep-alive only extends).
    pub async fn propose(&self, proposal: M::Proposal) -> Result<Response<M::Event>, ProposeError> {
        let deadline = tokio::time::Instant::now() + self.leader_wait;
        let mut maybe_applied = false;
        let mut backoff = Backoff::new(PROPOSE_RETRY_FIRST, PROPOSE_RETRY_MAX);
        let last_error = loop {
            let attempt = match self.wait_for_leader().await {
                None => Err(format!("no leader elected in the {} group", M::GROUP)),
                Some(leader) if leader == self.id => self.propose_here(proposal.clone()).await.map_err(|e| {
                    maybe_applied |= e.maybe_applied;
                    e.message
                }),
                Some(leader) => match self.member(leader) {
                    None => Err(format!("leader {leader} is not in the membership")),
                    Some(member) => match self.forward_while_leader(leader, &member, &proposal).await {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(ProposeHereError { maybe_applied: applied, message })) => {
                            maybe_applied |= applied;
                            Err(message)
                        }
                        Err(ForwardError { maybe_sent, message }) => {
                            maybe_applied |= maybe_sent;
                            Err(format!("forwarding to leader {leader} ({}): {message}", member.endpoint))
                        }
                    },
                },
            };
            // The leader changed (or is being elected): try again until the deadline.
            let message = match attempt {
                Ok(response) => return Ok(response),
                Err(message) => message,
            };
            let delay = backoff.next_delay();
            if tokio::time::Instant::now() + delay >= deadline {
                break message;
            }
            tracing::debug!(message, "proposal not taken; retrying");
            tokio::time::sleep(delay).await;
        };
        Err(if maybe_applied { ProposeError::Unknown(last_error) } else { ProposeError::Failed(last_error) })
    }

    /// Proposes on this node, if it leads; never forwards. The leader stamps the command with its clock.
    pub async fn propose_here(&self, proposal: M::Proposal) -> Result<Response<M::Event>, ProposeHereError> {
        let command = M::command(proposal, self.clock.now_ms());
        self.propose_command(command).await
    }

    /// Proposes `command` as it is, on this node (which must lead): for what the leader proposes on its
    /// own, such as the lock group's expiries. Waits up to the leader wait for it to be applied.
    pub async fn propose_command(&self, command: M::Command) -> Result<Response<M::Event>, ProposeHereError> {
        let leading_before = self.is_leader();
        // A leader cut off from the majority keeps its role until it hears of a newer term, and its
        // entries never commit: give up after the leader wait (the entry may still commit later).
        let write = tokio::time::timeout(self.leader_wait, self.raft.client_write(command)).await;
        let Ok(write) = write else {
            return Err(ProposeHereError {
                maybe_applied: true,
                message: format!("not committed within {:?}: no majority reachable?", self.leader_wait),
            });
        };
        match write {
            Ok(reply) => Ok(reply.data),
            // Not the leader before, at or after the call: nothing was appended. (A leader that appends
            // and then loses its leadership answers the same way, so leading at any point means unknown.
            // The metrics this reads lag Raft's core slightly; becoming and ceasing to be leader inside
            // that lag, with our entry appended in between, is the one case this mislabels.)
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))
                if !leading_before && forward.leader_id != Some(self.id) && !self.is_leader() =>
            {
                Err(ProposeHereError {
                    maybe_applied: false,
                    message: format!("member {} is not the leader (leader: {:?})", self.id, forward.leader_id),
                })
            }
            // Appended, then leadership changed (or another failure): the entry may still commit.
            Err(error) => Err(ProposeHereError { maybe_applied: true, message: error.to_string() }),
        }
    }

    /// Whether this node leads, by openraft's metrics (which lag its core slightly).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// The current leader, waiting up to `leader_wait` for one to be elected.
    pub async fn wait_for_leader(&self) -> Option<NodeId> {
        let mut metrics = self.raft.metrics();
        let wait = metrics.wait_for(|m| m.current_leader.is_some() || m.state == ServerState::Shutdown);
        match tokio::time::timeout(self.leader_wait, wait).await {
            Ok(Ok(metrics)) => metrics.current_leader,
            _ => None,
        }
    }

    /// The known leader now, without waiting.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// A member as this node reaches it.
    pub fn member(&self, id: NodeId) -> Option<Member> {
        let member = self.shared.read(|applied| applied.membership.membership().get_node(&id).cloned())?;
        Some(Member { endpoint: self.network.route(id, &member), site: member.site })
    }

    /// [`RaftGroup::forward`], abandoned if this node learns of another leader meanwhile (an old leader
    /// cut off from the majority would hold the proposal until it times out).
    async fn forward_while_leader(
        &self,
        leader: NodeId,
        member: &Member,
        proposal: &M::Proposal,
    ) -> Result<Result<Response<M::Event>, ProposeHereError>, ForwardError> {
        let mut metrics = self.raft.metrics();
        let replaced = metrics.wait_for(|m| m.current_leader.is_some_and(|current| current != leader));
        tokio::select! {
            result = self.forward(member, proposal) => result,
            _ = replaced => Err(ForwardError {
                maybe_sent: true,
                message: format!("leader {leader} was replaced while it held the proposal"),
            }),
        }
    }

    async fn forward(
        &self,
        member: &Member,
        proposal: &M::Proposal,
    ) -> Result<Result<Response<M::Event>, ProposeHereError>, ForwardError> {
        let channel = {
            let mut channels = self.channels.lock().expect("channels lock poisoned");
            match channels.get(&member.endpoint) {
                Some(channel) => channel.clone(),
                None => {
                    let channel = lazy_channel(&self.network.dialer, &member.endpoint)
                        .map_err(|e| ForwardError { maybe_sent: false, message: e.to_string() })?;
                    channels.insert(member.endpoint.clone(), channel.clone());
                    channel
                }
            }
        };
        let payload = crate::codec::encode(proposal);
        let mut request = tonic::Request::new(pb::RaftMessage { payload, group: M::GROUP.to_string() });
        request.set_timeout(self.leader_wait);
        let reply = RaftClient::new(channel).propose(request).await.map_err(|status| ForwardError {
            // A connection never opened (or a refusal by the leader's server) did not reach the proposal
            // queue; anything else may have.
            maybe_sent: geostore_proto::outcome::outcome_of(&status) == geostore_proto::outcome::Outcome::Unknown,
            message: status.message().to_string(),
        })?;
        crate::codec::decode(&reply.into_inner().payload)
            .map_err(|e| ForwardError { maybe_sent: true, message: format!("bad reply from the leader: {e}") })
    }
}

/// Why [`RaftGroup::propose_here`] failed, sent back to the member that forwarded the proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposeHereError {
    /// Whether the proposal may have entered the log (then its outcome is unknown).
    pub maybe_applied: bool,
    /// What went wrong, for people.
    pub message: String,
}

struct ForwardError {
    maybe_sent: bool,
    message: String,
}

impl<M: Machine> RaftGroup<M> {
    /// Adds the configured learners that the membership does not have yet (the leader's job, when it
    /// starts to lead).
    pub async fn add_learners(&self) {
        for learner in &self.learners {
            if self.member(learner.id).is_some() {
                continue;
            }
            match self.raft.add_learner(learner.id, learner.member.clone(), false).await {
                Ok(_) => tracing::info!(group = M::GROUP, id = learner.id, site = learner.member.site, "learner added"),
                Err(error) => tracing::warn!(group = M::GROUP, id = learner.id, %error, "could not add a learner"),
            }
        }
    }

    /// The group as this member sees it: leader (with its site and endpoint), term, log and applied
    /// positions, members. `Raft.GroupStatus` answers it (and `Cluster.Status` carries the lock group's).
    pub fn status(&self) -> pb::LockGroupStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, member)| pb::GroupMember {
                id: *id,
                site: member.site.clone(),
                endpoint: member.endpoint.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let state = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let leader = metrics.current_leader.and_then(|id| membership.get_node(&id));
        pb::LockGroupStatus {
            id: metrics.id,
            leader: metrics.current_leader.unwrap_or(0),
            leader_site: leader.map(|node| node.site.clone()).unwrap_or_default(),
            leader_endpoint: leader.map(|node| node.endpoint.clone()).unwrap_or_default(),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |id| id.index),
            members,
            state: state.to_string(),
            group: M::GROUP.to_string(),
        }
    }
}
