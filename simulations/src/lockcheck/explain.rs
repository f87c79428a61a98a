//! The explanations of the violations [`check_linear`](super::check_linear) reports: each names the clients,
//! tokens and times involved and says which rule of the model the history breaks.

use super::linear::{Bound, Holding, Why};
use super::{LockOp, Violation, lease_end, time};

impl Holding {
    /// "token 7 (client 2, acquire sent at 5, completed at 9)".
    pub(super) fn describe(&self) -> String {
        format!("token {} (client {}, acquire {})", self.token, self.acquire.client, self.acquire.times())
    }

    /// Says how we know the token held the lock by its deadline.
    pub(super) fn describe_deadline(&self) -> String {
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

pub(super) fn malformed(op: &LockOp) -> Violation {
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

pub(super) fn duplicate(lock: &str, kept: &Holding, other: &Holding) -> Violation {
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

pub(super) fn renewal_before_grant(lock: &str, holding: &Holding) -> Violation {
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

pub(super) fn out_of_order(lock: &str, holdings: &[Holding], earlier: Bound, i: usize) -> Violation {
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

pub(super) fn overlap(lock: &str, holdings: &[Holding], ttl_ms: u64, free: Bound, i: usize) -> Violation {
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
