//! What happened in a run: every operation the applications made (invocation, completion, outcome),
//! and the trace (faults, operations and results as text) whose hash says whether two runs were the same.

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;

/// Jepsen's outcome classes: `ok`, `fail` (certainly not applied), `info` (unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Call {
    Put {
        key: String,
        value: String,
    },
    PutTtl {
        key: String,
        value: String,
        ttl_ms: u64,
    },
    Delete {
        key: String,
    },
    Increment {
        key: String,
        delta: i64,
    },
    SetAdd {
        key: String,
        member: String,
    },
    SetRemove {
        key: String,
        member: String,
    },
    /// A read at the application's own site; `read` is what it returned (a register's value).
    Read {
        key: String,
        read: Option<String>,
    },
    /// A read at another site after the write that returned a causal token: it must see `expected`.
    CausalRead {
        key: String,
        site: usize,
        expected: String,
        read: Option<String>,
        /// The site the reading node said the value's write was made in (`None`: not said, or not yet
        /// known there). Own keys are written only at their application's site, `home`, so it must be
        /// that one.
        writer_site: Option<String>,
        home: usize,
    },
    Acquire {
        lock: String,
        token: Option<u64>,
    },
    Renew {
        lock: String,
        token: u64,
    },
    Release {
        lock: String,
        token: u64,
    },
    /// A write made under a lock with its fencing token: the list read, plus `element`.
    GuardedWrite {
        lock: String,
        token: u64,
        element: String,
        value: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// The application that made it.
    pub process: usize,
    /// The site whose node it went to.
    pub site: usize,
    pub call: Call,
    pub invoked_ms: u64,
    pub completed_ms: Option<u64>,
    pub outcome: Outcome,
    /// The error, if any.
    pub error: String,
    /// The server's reason for refusing the call, if it gave one (decide on this, not on `error`). Not in
    /// the exported history, whose format stays Jepsen's.
    #[serde(skip)]
    pub reason: Option<geostore_client::Reason>,
}

#[derive(Default)]
pub struct Recorder {
    pub ops: Vec<Op>,
    pub trace: Vec<String>,
    /// Print each trace line as it happens (`sim replay --trace`).
    pub echo: bool,
}

pub type Shared = Rc<RefCell<Recorder>>;

impl Recorder {
    pub fn note(&mut self, now_ms: u64, who: &str, what: impl AsRef<str>) {
        let line = format!("{:>7}.{:03} {who:<14} {}", now_ms / 1000, now_ms % 1000, what.as_ref());
        if self.echo {
            println!("{line}");
        }
        self.trace.push(line);
    }

    pub fn record(&mut self, op: Op) {
        let line = format!("{:?} {:?} {}", op.outcome, op.call, op.error);
        let now = op.completed_ms.unwrap_or(op.invoked_ms);
        self.note(now, &format!("app{}@dc{}", op.process, op.site), line);
        self.ops.push(op);
    }

    pub fn trace_hash(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for line in &self.trace {
            hasher.update(line.as_bytes());
            hasher.update(b"\n");
        }
        hasher.digest()
    }
}

/// The history as Jepsen/Elle read it (JSON): one `invoke` and one completion (`ok`, `fail` or `info`)
/// per operation, in time order, with `process`, `f`, `value` and `time` in nanoseconds. Registers are
/// expressed as Elle's rw-register micro-operations (`[["w", key, value]]`, `[["r", key, value]]`) and
/// locks as `acquire`/`release` with the fencing token as value (for a mutex model in Porcupine).
pub fn to_jepsen_json(ops: &[Op]) -> serde_json::Value {
    use serde_json::json;
    let mut events: Vec<(u64, usize, serde_json::Value)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        let (f, invoke_value, done_value) = match &op.call {
            Call::Put { key, value } | Call::PutTtl { key, value, .. } => {
                let micro = json!([["w", key, value]]);
                ("txn", micro.clone(), micro)
            }
            Call::Delete { key } => ("txn", json!([["w", key, null]]), json!([["w", key, null]])),
            Call::Read { key, read } | Call::CausalRead { key, read, .. } => {
                ("txn", json!([["r", key, null]]), json!([["r", key, read]]))
            }
            Call::Increment { key, delta } => ("add", json!([key, delta]), json!([key, delta])),
            Call::SetAdd { key, member } => ("set-add", json!([key, member]), json!([key, member])),
            Call::SetRemove { key, member } => ("set-remove", json!([key, member]), json!([key, member])),
            Call::Acquire { lock, token } => ("acquire", json!([lock, null]), json!([lock, token])),
            Call::Renew { lock, token } => ("renew", json!([lock, token]), json!([lock, token])),
            Call::Release { lock, token } => ("release", json!([lock, token]), json!([lock, token])),
            Call::GuardedWrite { lock, token, value, .. } => {
                let micro = json!([["w", format!("guarded/{lock}"), value]]);
                ("txn", micro.clone(), json!({"txn": micro, "fence": [lock, token]}))
            }
        };
        let invoke = json!({"type": "invoke", "process": op.process, "f": f, "value": invoke_value,
                            "time": op.invoked_ms * 1_000_000});
        events.push((op.invoked_ms, 2 * index, invoke));
        let kind = match op.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        let done_ms = op.completed_ms.unwrap_or(u64::MAX / 2_000_000);
        let mut done = json!({"type": kind, "process": op.process, "f": f, "value": done_value,
                              "time": done_ms * 1_000_000});
        if !op.error.is_empty() {
            done["error"] = json!(op.error);
        }
        events.push((done_ms, 2 * index + 1, done));
    }
    events.sort_by_key(|(time, order, _)| (*time, *order));
    let events: Vec<serde_json::Value> = events
        .into_iter()
        .enumerate()
        .map(|(index, (_, _, mut event))| {
            event["index"] = json!(index);
            event
        })
        .collect();
    serde_json::Value::Array(events)
}
