//! Every kind of bad input gets a specific error with the right status code and structured reason (with
//! its fields), and changes nothing.

use geostore_client::{Client, Outcome, Reason, Value, pb};
use geostore_tests::NodeProcess;
use tonic::Code;

struct Case {
    name: &'static str,
    code: Code,
    message: &'static str,
    reason: Reason,
}

fn expect_error<T: std::fmt::Debug>(result: Result<T, geostore_client::Error>, case: Case) {
    let error = result.expect_err(case.name);
    assert_eq!(error.code, case.code, "{}: {}", case.name, error.message);
    assert!(error.message.contains(case.message), "{}: {:?} lacks {:?}", case.name, error.message, case.message);
    assert_eq!(error.outcome, Outcome::Failed, "{}", case.name);
    assert_eq!(error.reason, Some(case.reason), "{}", case.name);
}

fn invalid(field: &str) -> Reason {
    Reason::InvalidRequest { field: field.into() }
}

fn mismatch(holds: &str, needs: &str) -> Reason {
    Reason::TypeMismatch { holds: holds.into(), needs: needs.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_specifically_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--value-bytes-max", "4096"]);
    let client = Client::connect(&[&node.endpoint]).await.unwrap();
    client.put("reg", "original", None).await.unwrap();
    client.set_add("set", vec![b"a".to_vec()]).await.unwrap();
    client.increment("ctr", 5).await.unwrap();

    use Code::{FailedPrecondition, InvalidArgument};
    expect_error(
        client.put("", "v", None).await,
        Case { name: "empty key", code: InvalidArgument, message: "the key is empty", reason: invalid("key") },
    );
    expect_error(
        client.get("").await,
        Case { name: "empty key on read", code: InvalidArgument, message: "the key is empty", reason: invalid("key") },
    );
    expect_error(
        client.put(vec![b'k'; 1025], "v", None).await,
        Case {
            name: "key over 1 KiB",
            code: InvalidArgument,
            message: "the key is 1025 bytes; the limit is 1024",
            reason: invalid("key"),
        },
    );
    expect_error(
        client.put("reg", vec![b'v'; 4097], None).await,
        Case {
            name: "value over the limit",
            code: InvalidArgument,
            message: "the value is 4097 bytes; the limit is 4096",
            reason: invalid("value"),
        },
    );
    expect_error(
        client.set_add("set", vec![vec![b'm'; 4097]]).await,
        Case {
            name: "member over the limit",
            code: InvalidArgument,
            message: "a set member is 4097 bytes",
            reason: invalid("members"),
        },
    );
    expect_error(
        client.set_add("set", vec![]).await,
        Case {
            name: "no members",
            code: InvalidArgument,
            message: "SetAdd needs at least one member",
            reason: invalid("members"),
        },
    );
    expect_error(
        client.increment("set", 1).await,
        Case {
            name: "increment on a set",
            code: FailedPrecondition,
            message: "the key holds a set; Increment needs a counter",
            reason: mismatch("set", "counter"),
        },
    );
    expect_error(
        client.put("ctr", "v", None).await,
        Case {
            name: "put on a counter",
            code: FailedPrecondition,
            message: "the key holds a counter; Put needs a register",
            reason: mismatch("counter", "register"),
        },
    );
    expect_error(
        client.set_members("reg").await,
        Case {
            name: "members of a register",
            code: FailedPrecondition,
            message: "the key holds a register",
            reason: mismatch("register", "set"),
        },
    );
    expect_error(
        client.increment("ctr", i64::MAX).await,
        Case {
            name: "counter overflow",
            code: FailedPrecondition,
            message: "overflows a 64-bit counter",
            reason: Reason::CounterOverflow { current: 5, delta: i64::MAX },
        },
    );
    expect_error(
        client
            .put_request(pb::PutRequest { key: b"reg".to_vec(), value: b"v".to_vec(), ttl_ms: Some(-5), fence: None })
            .await,
        Case {
            name: "negative TTL",
            code: InvalidArgument,
            message: "a TTL must be positive; got -5 ms",
            reason: invalid("ttl_ms"),
        },
    );
    expect_error(
        client
            .put_request(pb::PutRequest { key: b"reg".to_vec(), value: b"v".to_vec(), ttl_ms: Some(0), fence: None })
            .await,
        Case {
            name: "zero TTL",
            code: InvalidArgument,
            message: "a TTL must be positive; got 0 ms",
            reason: invalid("ttl_ms"),
        },
    );
    expect_error(
        client.expire_ms("reg", 400 * 365 * 24 * 3600 * 1000).await,
        Case { name: "absurd TTL", code: InvalidArgument, message: "over the limit", reason: invalid("ttl_ms") },
    );
    expect_error(
        client.expire_ms("missing", 1000).await,
        Case {
            name: "expire on a missing key",
            code: FailedPrecondition,
            message: "does not exist",
            reason: Reason::KeyNotFound,
        },
    );

    // A batch: the bad operations fail alone, the good ones are applied.
    let results = client
        .batch(vec![
            pb::WriteOp {
                op: Some(pb::write_op::Op::Increment(pb::IncrementRequest {
                    key: b"ctr".to_vec(),
                    delta: 1,
                    fence: None,
                })),
            },
            pb::WriteOp {
                op: Some(pb::write_op::Op::Increment(pb::IncrementRequest {
                    key: b"set".to_vec(),
                    delta: 1,
                    fence: None,
                })),
            },
            pb::WriteOp {
                op: Some(pb::write_op::Op::Put(pb::PutRequest {
                    key: Vec::new(),
                    value: Vec::new(),
                    ttl_ms: None,
                    fence: None,
                })),
            },
            pb::WriteOp { op: None },
        ])
        .await
        .unwrap();
    assert_eq!(results[0].as_ref().unwrap().counter, Some(6));
    assert_eq!(results[1].as_ref().unwrap_err().code, FailedPrecondition);
    assert_eq!(results[1].as_ref().unwrap_err().reason, Some(mismatch("set", "counter")), "a batch result's reason");
    assert_eq!(results[2].as_ref().unwrap_err().code, InvalidArgument);
    assert_eq!(results[2].as_ref().unwrap_err().reason, Some(invalid("key")));
    assert_eq!(results[3].as_ref().unwrap_err().code, InvalidArgument);
    assert_eq!(results[3].as_ref().unwrap_err().reason, Some(invalid("ops")));

    // Nothing else changed.
    assert_eq!(client.get("reg").await.unwrap().unwrap().value, Value::Register(b"original".to_vec()));
    assert_eq!(client.get("reg").await.unwrap().unwrap().expires_at_unix_ms, None);
    assert_eq!(client.get("ctr").await.unwrap().unwrap().value, Value::Counter(6));
    assert_eq!(client.set_members("set").await.unwrap(), Some(vec![b"a".to_vec()]));
    assert_eq!(client.get("missing").await.unwrap(), None);
}
