use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use geostore_client::{Absence, Client, Error, Lookup, Outcome, Value, WriteAck};
use serde_json::{Value as Json, json};

/// Options shared by every client subcommand.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Node endpoints, http://HOST:PORT, comma-separated; the first that answers is used.
    #[arg(
        long = "endpoint",
        env = "GEOSTORE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7000",
        global = true
    )]
    pub endpoints: Vec<String>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The lock a write is made under.
#[derive(Args, Clone)]
pub struct FenceArg {
    /// Make the write under a lock: LOCK:TOKEN (the token from `lock acquire`). Replicas that know a
    /// higher token for the lock refuse it. Inside `geostore lock run`, GEOSTORE_FENCE sets it.
    #[arg(long, env = "GEOSTORE_FENCE", value_parser = parse_fence)]
    fence: Option<(String, u64)>,
}

fn parse_fence(text: &str) -> Result<(String, u64), String> {
    let (lock, token) = text.rsplit_once(':').ok_or_else(|| format!("fence {text:?}: expected LOCK:TOKEN"))?;
    let token = token.parse().map_err(|_| format!("fence {text:?}: bad token {token:?}"))?;
    if lock.is_empty() {
        return Err(format!("fence {text:?}: the lock name is empty"));
    }
    Ok((lock.to_string(), token))
}

impl FenceArg {
    /// `client`, fenced if asked.
    fn apply(&self, client: &Client) -> Client {
        match &self.fence {
            Some((lock, token)) => client.with_fence(lock, *token),
            None => client.clone(),
        }
    }
}

#[derive(Args)]
pub struct KvArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand)]
enum KvOp {
    /// Read a key of any type.
    Get {
        key: String,
        /// Read-your-writes: wait until this node has the write that returned this causal token
        /// (SITE:PARTITION:SEQUENCE, as printed by a write's --json `causal_token`).
        #[arg(long, value_parser = geostore_client::parse_token)]
        after: Option<geostore_client::pb::CausalToken>,
        /// How long to wait for it (the node caps this; default: the node's cap).
        #[arg(long, value_parser = humantime::parse_duration, requires = "after")]
        wait: Option<Duration>,
    },
    /// Set a register.
    Put {
        key: String,
        value: String,
        /// Expire the key this long after the write (e.g. 30s, 5m, 1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        fence: FenceArg,
    },
    /// Delete a key of any type.
    Del {
        key: String,
        #[command(flatten)]
        fence: FenceArg,
    },
    /// Add to a counter (default 1; may be negative).
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
        #[command(flatten)]
        fence: FenceArg,
    },
    /// Add members to a set.
    Sadd {
        key: String,
        #[arg(required = true)]
        members: Vec<String>,
        #[command(flatten)]
        fence: FenceArg,
    },
    /// Remove members from a set.
    Srem {
        key: String,
        #[arg(required = true)]
        members: Vec<String>,
        #[command(flatten)]
        fence: FenceArg,
    },
    /// List a set's members.
    Smembers { key: String },
    /// Give an existing key an expiry (e.g. 30s).
    Expire {
        key: String,
        #[arg(value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[command(flatten)]
        fence: FenceArg,
    },
}

pub async fn run(args: KvArgs) -> ExitCode {
    let json = args.client.json;
    match execute(args).await {
        Ok(output) => {
            if json {
                println!("{}", output.json);
            } else {
                println!("{}", output.text);
            }
            ExitCode::SUCCESS
        }
        Err(error) => report_error(&error, json),
    }
}

/// Prints a client error and picks the exit code from its outcome.
pub fn report_error(error: &Error, json: bool) -> ExitCode {
    let (outcome, code) = match error.outcome {
        Outcome::Failed => ("failed", crate::EXIT_FAILED),
        Outcome::Unknown => ("unknown", crate::EXIT_UNKNOWN),
    };
    if json {
        let mut object = json!({"error": error.message, "code": format!("{:?}", error.code), "outcome": outcome});
        if let Some(reason) = &error.reason {
            object["reason"] = json!(reason.name());
            let fields: serde_json::Map<String, Json> =
                reason.fields().into_iter().map(|(key, value)| (key.to_string(), json!(value))).collect();
            object["fields"] = Json::Object(fields);
        }
        println!("{object}");
    } else {
        let hint = match error.outcome {
            Outcome::Failed => "nothing was changed",
            Outcome::Unknown => "the write may or may not have been applied",
        };
        eprintln!("error: {} ({hint})", error.message);
    }
    ExitCode::from(code)
}

struct Output {
    text: String,
    json: Json,
}

fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

async fn execute(args: KvArgs) -> Result<Output, Error> {
    let client = Client::connect(&args.client.endpoints).await?;
    match args.op {
        KvOp::Get { key, after: None, .. } => Ok(read_output(&key, client.lookup(key.as_str()).await?)),
        KvOp::Get { key, after: Some(token), wait } => {
            Ok(read_output(&key, client.lookup_after(key.as_str(), token, wait).await?))
        }
        KvOp::Put { key, value, ttl, fence } => {
            Ok(write_output(&key, fence.apply(&client).put(key.as_str(), value, ttl).await?))
        }
        KvOp::Del { key, fence } => Ok(write_output(&key, fence.apply(&client).delete(key.as_str()).await?)),
        KvOp::Incr { key, delta, fence } => {
            Ok(write_output(&key, fence.apply(&client).increment(key.as_str(), delta).await?))
        }
        KvOp::Sadd { key, members, fence } => {
            let members = members.iter().map(|m| bytes(m)).collect();
            Ok(write_output(&key, fence.apply(&client).set_add(key.as_str(), members).await?))
        }
        KvOp::Srem { key, members, fence } => {
            let members = members.iter().map(|m| bytes(m)).collect();
            Ok(write_output(&key, fence.apply(&client).set_remove(key.as_str(), members).await?))
        }
        KvOp::Smembers { key } => {
            let members = client.set_members(key.as_str()).await?;
            let found = members.is_some();
            let members: Vec<String> =
                members.unwrap_or_default().iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
            Ok(Output {
                text: if found { members.join("\n") } else { "(nil)".to_string() },
                json: json!({"key": key, "found": found, "type": "set", "value": members}),
            })
        }
        KvOp::Expire { key, ttl, fence } => {
            Ok(write_output(&key, fence.apply(&client).expire(key.as_str(), ttl).await?))
        }
    }
}

fn read_output(key: &str, lookup: Lookup) -> Output {
    let found = match lookup {
        Lookup::Found(found) => found,
        Lookup::Absent(absence) => {
            let (absence, since) = match absence {
                Absence::NoRecord => ("no_record", None),
                Absence::Deleted { since_unix_ms } => ("deleted", Some(since_unix_ms)),
                Absence::Expired { since_unix_ms } => ("expired", Some(since_unix_ms)),
            };
            let json = json!({"key": key, "found": false, "absence": absence, "absent_since_unix_ms": since});
            return Output { text: "(nil)".to_string(), json };
        }
    };
    let mut object = json!({
        "key": key,
        "found": true,
        "type": found.value.type_name(),
        "expires_at_unix_ms": found.expires_at_unix_ms,
        "last_write_hlc": found.last_write_hlc,
        "last_write_unix_ms": found.last_write_unix_ms,
        "last_write_site": found.last_write_site,
        "last_write_fence": found.last_write_fence.as_ref().map(|fence| json!({"lock": fence.lock, "token": fence.token})),
    });
    let text = match &found.value {
        Value::Register(value) => {
            match std::str::from_utf8(value) {
                Ok(text) => object["value"] = json!(text),
                Err(_) => object["value_hex"] = json!(value.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            }
            String::from_utf8_lossy(value).into_owned()
        }
        Value::Counter(value) => {
            object["value"] = json!(value);
            value.to_string()
        }
        Value::Set(members) => {
            let members: Vec<String> = members.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
            object["value"] = json!(members);
            members.join("\n")
        }
    };
    Output { text, json: object }
}

fn write_output(key: &str, ack: WriteAck) -> Output {
    let token = ack.token.as_ref().map(|t| json!({"site": t.site, "partition": t.partition, "sequence": t.sequence}));
    let causal_token = ack.token.as_ref().map(geostore_client::format_token);
    let mut object = json!({
        "key": key,
        "ok": true,
        "hlc": ack.hlc,
        "token": token,
        "causal_token": causal_token,
        "existed": ack.existed,
    });
    let text = match ack.counter {
        Some(counter) => {
            object["value"] = json!(counter);
            counter.to_string()
        }
        None => "OK".to_string(),
    };
    Output { text, json: object }
}
