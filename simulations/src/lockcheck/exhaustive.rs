//! The exhaustive checker: a Wing & Gong search over every order in which the calls could have taken effect.

use std::collections::{HashMap, HashSet};

use super::{AcquireOutcome, LockOp, NEVER, lease_end};

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
