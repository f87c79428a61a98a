//! One client of the lock-set workload (tests/tests/fenced_lockset.rs), as its own process so that the
//! test can pause it with SIGSTOP like a garbage-collection or VM pause.
//!
//! Forever: take the global lock; read the register (after the causal token the previous holder left in
//! its release note, if any); add this worker's next unique element; write the register back (fenced with
//! the lock's token unless --no-fence); release, leaving the write's causal token as the note. Between
//! the read and the write it pauses briefly, and says so, so that the test can stop it right there.
//!
//! Prints one JSON object per line: `{"event":"read",...}` after each read, and one `{"event":"done",...}`
//! per element with its outcome: `ok` (written and released: the element must survive), `failed`
//! (certainly not written), `unknown`.
//!
//! Usage: lockset-worker --endpoint URL --name NAME [--no-fence] [--ttl-ms 1000]

use std::io::Write;
use std::time::Duration;

use geostore_client::{Client, Outcome, Value, Wait, format_token, parse_token};
use serde_json::json;

const LOCK: &str = "lockset";
const KEY: &str = "lockset:elements";

fn emit(line: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value_of = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let endpoint = value_of("--endpoint").expect("--endpoint URL");
    let name = value_of("--name").expect("--name NAME");
    let ttl = Duration::from_millis(value_of("--ttl-ms").map_or(1000, |v| v.parse().expect("--ttl-ms N")));
    let fenced = !args.iter().any(|a| a == "--no-fence");
    let client = loop {
        match Client::connect(&[&endpoint]).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    for round in 0_u64.. {
        let element = format!("{name}-{round}");
        let guard = match client.hold(LOCK, ttl, Wait::Up(Duration::from_secs(5)), &name).await {
            Ok(guard) => guard,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let token = guard.token();
        let read = match guard.grant().previous_note.as_deref().map(parse_token) {
            Some(Ok(after)) => client.get_after(KEY, after, Some(Duration::from_secs(3))).await,
            _ => client.get(KEY).await,
        };
        let mut elements: Vec<String> = match read {
            Ok(Some(found)) => match found.value {
                Value::Register(bytes) => {
                    String::from_utf8_lossy(&bytes).split(',').filter(|e| !e.is_empty()).map(str::to_string).collect()
                }
                _ => Vec::new(),
            },
            Ok(None) => Vec::new(),
            Err(_) => {
                // Could not see the previous holder's write: give the lock up without writing.
                let _ = guard.release().await;
                continue;
            }
        };
        emit(json!({"event": "read", "worker": name, "element": element, "token": token}));
        // Widen the window between the read and the write, so that the test's pauses land inside it.
        tokio::time::sleep(Duration::from_millis(150)).await;
        elements.push(element.clone());
        let writer = if fenced { guard.client() } else { client.clone() };
        let written = writer.put(KEY, elements.join(","), None).await;
        let (outcome, site, sequence, rejected) = match &written {
            Ok(ack) => {
                let token = ack.token.as_ref().expect("writes return a causal token");
                ("written", token.site.clone(), token.sequence, false)
            }
            Err(error) if error.outcome == Outcome::Failed => {
                ("failed", String::new(), 0, matches!(error.reason, Some(geostore_client::Reason::StaleFence { .. })))
            }
            Err(_) => ("unknown", String::new(), 0, false),
        };
        let outcome = match (outcome, &written) {
            ("written", Ok(ack)) => {
                let note = ack.token.as_ref().map(format_token);
                match guard.release_with_note(note.as_deref()).await {
                    Ok(()) => "ok",
                    // The lease ran out before the release: a later holder may not have read this write.
                    Err(_) => "unknown",
                }
            }
            (other, _) => {
                let _ = guard.release().await;
                other
            }
        };
        emit(json!({
            "event": "done", "worker": name, "element": element, "token": token, "outcome": outcome,
            "site": site, "sequence": sequence, "stale_fence": rejected,
        }));
    }
}
