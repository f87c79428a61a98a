//! `geostore lock ...` and `geostore election ...`: global locks and leader election from the shell.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use geostore_client::{Client, Error, Grant, LockGuard, Lost, Wait, pb};
use serde_json::{Value as Json, json};

use crate::kv::{ClientArgs, report_error};

/// Exit code of `lock run` and `election campaign` when the lock was lost while held.
pub const EXIT_LOCK_LOST: u8 = 4;

#[derive(Args)]
pub struct LockArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    op: LockOp,
}

#[derive(Args, Clone, Copy)]
struct HoldArgs {
    /// Lease length: the lock is lost this long after the last keep-alive.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    ttl: Duration,
    /// How long to wait in line for a held lock.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", conflicts_with = "try_once")]
    wait: Duration,
    /// Fail at once if the lock is held.
    #[arg(long = "try")]
    try_once: bool,
}

impl HoldArgs {
    fn wait(self) -> Wait {
        if self.try_once { Wait::Try } else { Wait::Up(self.wait) }
    }
}

#[derive(Subcommand)]
enum LockOp {
    /// Take a lock and print its fencing token and lease (the lock is not kept alive: see `lock run`).
    Acquire {
        name: String,
        #[command(flatten)]
        hold: HoldArgs,
        /// Free text stored with the grant (who holds it).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Release a lock held under a token.
    Release {
        name: String,
        #[arg(long)]
        token: u64,
        /// Left for the next holder (it finds it as `previous_note` in its grant), e.g. a causal token.
        #[arg(long, conflicts_with = "after")]
        note: Option<String>,
        /// The causal token (SITE:PARTITION:SEQUENCE) of the last write made under the lock, left for the
        /// next holder (it finds it as `previous_after` in its grant); checked by the server.
        #[arg(long, value_parser = geostore_client::parse_token)]
        after: Option<pb::CausalToken>,
    },
    /// Every held or awaited lock.
    List,
    /// One lock's holder and waiters.
    Describe { name: String },
    /// Hold a lock while COMMAND runs: keeps it alive, exports GEOSTORE_FENCE_TOKEN (and GEOSTORE_FENCE as
    /// NAME:TOKEN), releases it when COMMAND exits. If the lock is lost, COMMAND is terminated and this exits 4.
    Run {
        name: String,
        #[command(flatten)]
        hold: HoldArgs,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Args)]
pub struct ElectionArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    op: ElectionOp,
}

#[derive(Subcommand)]
enum ElectionOp {
    /// Campaign to lead: waits until elected, prints the term's token, then leads until Ctrl-C (resigns)
    /// or until leadership is lost (exit 4).
    Campaign {
        name: String,
        /// What this candidate proposes (its address, say): observers see it.
        value: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        ttl: Duration,
        /// How long to wait to be elected.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
        wait: Duration,
    },
    /// Print the leader now and at each change (one line, or one JSON object, per change) until Ctrl-C.
    Observe { name: String },
    /// Give up leadership held under a token.
    Resign {
        name: String,
        #[arg(long)]
        token: u64,
    },
}

fn grant_json(grant: &Grant) -> Json {
    json!({
        "name": grant.name,
        "token": grant.token,
        "lease": grant.lease,
        "ttl_ms": u64::try_from(grant.ttl.as_millis()).unwrap_or(u64::MAX),
        "expires": grant.expires_unix_ms,
        "label": grant.label,
        "previous_note": grant.previous_note,
        "previous_after": grant.previous_after.as_ref().map(geostore_client::format_token),
    })
}

fn state_json(state: &pb::LockState) -> Json {
    json!({
        "name": state.name,
        "holder": state.holder.clone().map(|g| grant_json(&Grant::from(g))),
        "waiters": state.waiters.iter().map(|w| format!("{}/{}", w.client, w.request)).collect::<Vec<_>>(),
        "applied_index": state.applied_index,
    })
}

fn state_text(state: &pb::LockState) -> String {
    let holder = match &state.holder {
        Some(grant) => {
            format!("held, token {} (label {:?}, {})", grant.token, grant.label, expiry_text(grant.expires_unix_ms))
        }
        None => "free".to_string(),
    };
    format!("{}: {holder}, {} waiting", state.name, state.waiters.len())
}

/// A lease's expiry for people, relative to this machine's clock: `expires in 9.8s`, `expired 2s ago`.
/// (`--json` keeps the Unix milliseconds.)
fn expiry_text(expires_unix_ms: u64) -> String {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let (ahead, ms) = match u128::from(expires_unix_ms).checked_sub(now_ms) {
        Some(ms) => (true, ms),
        None => (false, now_ms - u128::from(expires_unix_ms)),
    };
    let shown = show_duration(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)));
    if ahead { format!("expires in {shown}") } else { format!("expired {shown} ago") }
}

/// `9.8s` under a minute, else whole seconds as humantime writes them (`2m 5s`, `1h 3m 20s`).
fn show_duration(duration: Duration) -> String {
    if duration < Duration::from_secs(60) {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
    }
}

fn print(json_output: bool, json: Json, text: String) {
    if json_output {
        println!("{json}");
    } else {
        println!("{text}");
    }
}

/// Connects to the first endpoint that answers and runs `command`; a failure becomes its report and exit
/// code.
async fn with_client<F, Fut>(args: &ClientArgs, command: F) -> ExitCode
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, Error>>,
{
    let result = match Client::connect(&args.endpoints).await {
        Ok(client) => command(client).await,
        Err(error) => Err(error),
    };
    result.unwrap_or_else(|error| report_error(&error, args.json))
}

pub async fn run(args: LockArgs) -> ExitCode {
    let json_output = args.client.json;
    with_client(&args.client, |client| async move {
        match args.op {
            LockOp::Acquire { name, hold, label } => {
                let grant = client.acquire(&name, hold.ttl, hold.wait(), &label).await?;
                print(
                    json_output,
                    grant_json(&grant),
                    format!("token {} lease {} {}", grant.token, grant.lease, expiry_text(grant.expires_unix_ms)),
                );
                Ok(ExitCode::SUCCESS)
            }
            LockOp::Release { name, token, note, after } => {
                match after {
                    Some(after) => client.release_after(&name, token, after).await?,
                    None => client.release_with_note(&name, token, note.as_deref()).await?,
                }
                print(json_output, json!({"name": name, "released": true, "token": token}), "OK".into());
                Ok(ExitCode::SUCCESS)
            }
            LockOp::List => {
                let locks = client.list_locks().await?;
                let text = if locks.is_empty() {
                    "(no locks)".to_string()
                } else {
                    locks.iter().map(state_text).collect::<Vec<_>>().join("\n")
                };
                print(json_output, json!({"locks": locks.iter().map(state_json).collect::<Vec<_>>()}), text);
                Ok(ExitCode::SUCCESS)
            }
            LockOp::Describe { name } => {
                let state = client.describe(&name).await?;
                print(json_output, state_json(&state), state_text(&state));
                Ok(ExitCode::SUCCESS)
            }
            LockOp::Run { name, hold, command } => run_locked(&client, &name, hold, &command, json_output).await,
        }
    })
    .await
}

/// `lock run`: the command's exit code, or 4 if the lock was lost (the command is then terminated).
async fn run_locked(
    client: &Client,
    name: &str,
    hold: HoldArgs,
    command: &[String],
    json_output: bool,
) -> Result<ExitCode, Error> {
    let mut guard = client.hold(name, hold.ttl, hold.wait(), &format!("lock run (pid {})", std::process::id())).await?;
    let token = guard.token();
    eprintln!("geostore: holding lock {name:?} with token {token}");
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("GEOSTORE_FENCE_TOKEN", token.to_string())
        .env("GEOSTORE_FENCE", format!("{name}:{token}"))
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            let _ = guard.release().await;
            eprintln!("error: cannot run {:?}: {error}", command[0]);
            return Ok(ExitCode::from(crate::EXIT_FAILED));
        }
    };
    tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| {
                Error::local(tonic::Code::Internal, geostore_client::Outcome::Unknown, format!("waiting for the command: {e}"))
            })?;
            if let Err(error) = guard.release().await {
                eprintln!("geostore: releasing the lock failed ({}); it expires after its TTL", error.message);
            }
            if json_output {
                println!("{}", json!({"name": name, "token": token, "exit_code": status.code()}));
            }
            Ok(ExitCode::from(status.code().map_or(crate::EXIT_FAILED, |code| u8::try_from(code).unwrap_or(crate::EXIT_FAILED))))
        }
        lost = guard.wait_lost() => {
            terminate(&mut child).await;
            report_lost(name, token, &lost, json_output);
            Ok(ExitCode::from(EXIT_LOCK_LOST))
        }
    }
}

fn report_lost(name: &str, token: u64, lost: &Lost, json_output: bool) {
    let reason = match lost {
        Lost::Expired => "the lease expired".to_string(),
        Lost::Unconfirmed(why) => format!("the lease could not be kept alive: {why}"),
    };
    if json_output {
        println!("{}", json!({"name": name, "token": token, "lost": true, "reason": reason}));
    }
    eprintln!("geostore: lost lock {name:?} (token {token}): {reason}");
}

/// SIGTERM, then SIGKILL after a grace period.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

pub async fn run_election(args: ElectionArgs) -> ExitCode {
    let json_output = args.client.json;
    with_client(&args.client, |client| async move {
        match args.op {
            ElectionOp::Campaign { name, value, ttl, wait } => {
                let guard = client.campaign(&name, &value, ttl, wait).await?;
                let grant = guard.grant().clone();
                print(
                    json_output,
                    json!({"election": name, "leader": true, "value": value, "token": grant.token, "lease": grant.lease}),
                    format!("elected: {name} (token {})", grant.token),
                );
                lead(name, guard, json_output).await
            }
            ElectionOp::Observe { name } => {
                let mut leaders = client.observe(&name).await?;
                while let Some(leader) = leaders.recv().await {
                    let leader = leader?;
                    let json = json!({
                        "election": name,
                        "leader": leader.as_ref().map(|g| json!({"value": g.label, "token": g.token})),
                    });
                    let text = match &leader {
                        Some(grant) => format!("{} (token {})", grant.label, grant.token),
                        None => "(no leader)".to_string(),
                    };
                    print(json_output, json, text);
                }
                Ok(ExitCode::SUCCESS)
            }
            ElectionOp::Resign { name, token } => {
                client.resign(&name, token).await?;
                print(json_output, json!({"election": name, "resigned": true, "token": token}), "OK".into());
                Ok(ExitCode::SUCCESS)
            }
        }
    })
    .await
}

/// Leads until Ctrl-C or SIGTERM (then resigns) or until leadership is lost.
async fn lead(name: String, mut guard: LockGuard, json_output: bool) -> Result<ExitCode, Error> {
    let token = guard.token();
    tokio::select! {
        _ = crate::node::shutdown_signal() => {
            guard.release().await?;
            print(json_output, json!({"election": name, "resigned": true, "token": token}), "resigned".into());
            Ok(ExitCode::SUCCESS)
        }
        lost = guard.wait_lost() => {
            report_lost(&name, token, &lost, json_output);
            Ok(ExitCode::from(EXIT_LOCK_LOST))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(show_duration(Duration::from_millis(9_840)), "9.8s");
        assert_eq!(show_duration(Duration::from_millis(125_400)), "2m 5s");
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(expiry_text(now_ms + 25_000).starts_with("expires in 2"), "{}", expiry_text(now_ms + 25_000));
        assert!(expiry_text(now_ms - 5_000).starts_with("expired 5"), "{}", expiry_text(now_ms - 5_000));
    }
}
