//! The `geostore` command line against a real node: every kv subcommand, JSON output, exit codes,
//! graceful shutdown, gRPC reflection and the HTTP side port.

use std::io::{Read, Write};

use geostore_tests::{NodeProcess, geostore};
use serde_json::Value as Json;

fn json(args: &[&str]) -> Json {
    let (code, stdout, stderr) = geostore(args);
    assert_eq!(code, 0, "geostore {args:?} failed: {stdout} {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn kv_subcommands_with_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let e = node.endpoint.as_str();

    let put = json(&["kv", "put", "greeting", "hello", "--endpoint", e, "--json", "--ttl", "1h"]);
    assert_eq!(put["ok"], true);
    assert!(put["hlc"].as_u64().unwrap() > 0);
    assert_eq!(put["token"]["site"], "local");
    // Sequence 1 of the key's partition is the node's site record, written before its first write there.
    assert_eq!(put["token"]["sequence"], 2);

    let get = json(&["kv", "--endpoint", e, "--json", "get", "greeting"]);
    assert_eq!(get["key"], "greeting");
    assert_eq!(get["type"], "register");
    assert_eq!(get["value"], "hello");
    assert!(get["expires_at_unix_ms"].as_i64().unwrap() > 0);

    assert_eq!(json(&["kv", "incr", "hits", "--endpoint", e, "--json"])["value"], 1);
    assert_eq!(json(&["kv", "incr", "hits", "-3", "--endpoint", e, "--json"])["value"], -2);
    let get = json(&["kv", "get", "hits", "--endpoint", e, "--json"]);
    assert_eq!((get["type"].as_str(), get["value"].as_i64()), (Some("counter"), Some(-2)));

    json(&["kv", "sadd", "cart", "apple", "pear", "plum", "--endpoint", e, "--json"]);
    json(&["kv", "srem", "cart", "pear", "--endpoint", e, "--json"]);
    let members = json(&["kv", "smembers", "cart", "--endpoint", e, "--json"]);
    assert_eq!(members["value"], serde_json::json!(["apple", "plum"]));

    json(&["kv", "expire", "cart", "30s", "--endpoint", e, "--json"]);
    assert!(json(&["kv", "get", "cart", "--endpoint", e, "--json"])["expires_at_unix_ms"].is_i64());

    let del = json(&["kv", "del", "greeting", "--endpoint", e, "--json"]);
    assert_eq!(del["existed"], true);
    assert_eq!(json(&["kv", "get", "greeting", "--endpoint", e, "--json"])["found"], false);

    // Text output.
    let (code, stdout, _) = geostore(&["kv", "get", "hits", "--endpoint", e]);
    assert_eq!((code, stdout.trim()), (0, "-2"));
}

#[test]
fn errors_exit_non_zero_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let e = node.endpoint.as_str();
    json(&["kv", "sadd", "s", "x", "--endpoint", e, "--json"]);

    let (code, _, stderr) = geostore(&["kv", "incr", "s", "--endpoint", e]);
    assert_eq!(code, 1);
    assert!(stderr.contains("the key holds a set; Increment needs a counter"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");

    let (code, stdout, _) = geostore(&["kv", "incr", "s", "--endpoint", e, "--json"]);
    assert_eq!(code, 1);
    let error: Json = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((error["code"].as_str(), error["outcome"].as_str()), (Some("FailedPrecondition"), Some("failed")));

    let (code, _, stderr) = geostore(&["kv", "get", "k", "--endpoint", "http://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot connect to any endpoint"), "{stderr}");

    let (code, _, stderr) = geostore(&["kv", "put", "k", "v", "--ttl", "soon", "--endpoint", e]);
    assert_eq!(code, 2, "a bad flag is a usage error");
    assert!(stderr.contains("--ttl"), "{stderr}");
}

#[test]
fn endpoints_come_from_the_environment_with_failover_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let endpoints = format!("http://127.0.0.1:1,{}", node.endpoint);
    let output = std::process::Command::new(geostore_tests::geostore_bin())
        .args(["kv", "put", "k", "v"])
        .env("GEOSTORE_ENDPOINTS", endpoints)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn sigterm_shuts_down_cleanly_and_data_stays() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start(dir.path(), &["--site", "eu"]);
    json(&["kv", "put", "k", "v", "--endpoint", &node.endpoint, "--json"]);
    assert!(node.terminate(), "the node exits 0 on SIGTERM");
    node.restart();
    assert_eq!(json(&["kv", "get", "k", "--endpoint", &node.endpoint, "--json"])["value"], "v");
    // The data directory remembers its site.
    drop(node);
    let (code, _, stderr) = geostore(&["node", "--data-dir", dir.path().to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("belongs to site \"eu\", not \"local\""), "{stderr}");
}

#[test]
fn config_file_settings_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "site = \"us\"\nvalue_bytes_max = 10\nlisten = \"127.0.0.1:1\"\n").unwrap();
    // --listen on the command line (port 0, set by the helper) wins over the file's.
    let node = NodeProcess::start(&dir.path().join("data"), &["--config", config.to_str().unwrap()]);
    let put = json(&["kv", "put", "k", "0123456789", "--endpoint", &node.endpoint, "--json"]);
    assert_eq!(put["token"]["site"], "us");
    let (code, _, stderr) = geostore(&["kv", "put", "k", "0123456789X", "--endpoint", &node.endpoint]);
    assert_eq!(code, 1);
    assert!(stderr.contains("the limit is 10"), "{stderr}");

    std::fs::write(&config, "sites = 3\n").unwrap();
    let (code, _, stderr) = geostore(&["node", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("unknown field `sites`"), "{stderr}");
}

fn http_get(base: &str, path: &str) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn http_side_port_serves_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--http-listen", "127.0.0.1:0"]);
    json(&["kv", "incr", "c", "--endpoint", &node.endpoint, "--json"]);
    let http = node.http.as_deref().unwrap();
    assert!(http_get(http, "/healthz").starts_with("HTTP/1.1 200"));
    assert!(http_get(http, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(http, "/metrics");
    assert!(metrics.contains("geostore_writes_total{op=\"Increment\",result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("geostore_group_commit_ops_bucket"), "{metrics}");
}

#[tokio::test]
async fn grpc_reflection_lists_the_api() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &[]);
    let channel = tonic::transport::Channel::from_shared(node.endpoint.clone()).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"geostore.v1.KV".to_string()), "{names:?}");
}

/// A base port with P..P+2 and P+100..P+102 free on 127.0.0.1.
fn free_port_base() -> u16 {
    for _ in 0..100 {
        let base = 20_000 + (std::process::id() as u16 % 20_000) + (geostore_tests::free_port() % 500);
        let ports = [base, base + 1, base + 2, base + 100, base + 101, base + 102];
        if ports.iter().all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range for geostore dev");
}

/// Kills the process when dropped, so a failing test leaves nothing running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn dev_runs_three_replicating_sites_and_keeps_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_port_base();
    let start = || {
        let mut child = std::process::Command::new(geostore_tests::geostore_bin())
            .args(["dev", "--dir", dir.path().to_str().unwrap(), "--port-base", &base.to_string()])
            .env("GEOSTORE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        use std::io::BufRead;
        let lines: Vec<String> = stdout.lines().map_while(Result::ok).take(4).collect();
        let child = KillOnDrop(child);
        assert!(lines.len() == 4 && lines[3].contains("three sites running"), "{lines:?}");
        child
    };
    let endpoint = |i: u16| format!("http://127.0.0.1:{}", base + i);
    let mut dev = start();
    let put = json(&["kv", "put", "greeting", "hello", "--endpoint", &endpoint(0), "--json"]);
    let token = put["causal_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("dc0:"), "{token}");
    let read =
        json(&["kv", "get", "greeting", "--after", &token, "--wait", "5s", "--endpoint", &endpoint(2), "--json"]);
    assert_eq!(read["value"], "hello");
    let status = json(&["status", "--endpoint", &endpoint(1), "--json"]);
    assert_eq!(status["sites"], serde_json::json!(["dc0", "dc1", "dc2"]));
    assert_eq!(status["partitions"], 64);
    assert_eq!(status["peers"].as_array().unwrap().len(), 2);
    assert!(status["peers"][0]["lag_ops"].is_u64() && status["peers"][0]["lag_seconds"].is_f64(), "{status}");
    // The lock group as Cluster.Status reports it: this node is member 2, of three voters.
    assert_eq!(status["lock_group"]["id"], 2, "{status}");
    assert_eq!(status["lock_group"]["members"].as_array().unwrap().len(), 3, "{status}");
    assert!(status["lock_group"]["leader_site"].is_string(), "{status}");
    // Site dc1's placement group (one node: member 2) creates the site's map once it has elected itself.
    let status_with_placement = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let status = json(&["status", "--endpoint", &endpoint(1), "--json"]);
            if status["placement"]["version"].as_u64().unwrap_or(0) > 0 {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "no placement map after 30 s: {status}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let status = status_with_placement();
    let placement = &status["placement"];
    assert_eq!((placement["replicas_per_site"].as_u64(), placement["leader"].as_u64()), (Some(1), Some(2)), "{status}");
    let partitions = placement["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 64, "{status}");
    assert!(partitions.iter().all(|p| p["primary"] == 2 && p["replicas"] == serde_json::json!([2]) && p["epoch"] == 1));
    // Every member, each as it says of itself: one node per site, holding all 64 partitions of its site.
    let nodes = status["nodes"].as_array().unwrap();
    let listed: Vec<(u64, &str, bool)> =
        nodes.iter().map(|n| (n["id"].as_u64().unwrap(), n["site"].as_str().unwrap(), n["up"] == true)).collect();
    assert_eq!(listed, [(1, "dc0", true), (2, "dc1", true), (3, "dc2", true)], "{status}");
    for node in nodes {
        assert_eq!(node["endpoint"], endpoint(node["id"].as_u64().unwrap() as u16 - 1), "{status}");
        let held = (node["partitions"].as_array().map(Vec::len), node["primaries"].as_array().map(Vec::len));
        assert_eq!(held, (Some(64), Some(64)), "{status}");
    }
    let version = placement["version"].clone();

    let _ = std::process::Command::new("kill").args(["-TERM", &dev.0.id().to_string()]).status();
    assert!(dev.0.wait().unwrap().success(), "geostore dev exits 0 on SIGTERM");
    let _dev = start();
    assert_eq!(json(&["kv", "get", "greeting", "--endpoint", &endpoint(1), "--json"])["value"], "hello");
    // The map survives the restart as it was (it is in the placement group's log or snapshot).
    let status = status_with_placement();
    assert_eq!(status["placement"]["version"], version, "{status}");
}
