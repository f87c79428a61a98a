//! Every kind of bad input gets a specific error with the right status code, and changes nothing.

use geostore_client::{Client, Outcome, Value, pb};
use geostore_tests::NodeProcess;
use tonic::Code;

struct Case {
    name: &'static str,
    code: Code,
    message: &'static str,
}

fn expect_error<T: std::fmt::Debug>(result: Result<T, geostore_client::Error>, case: Case) {
    let error = result.expect_err(case.name);
    assert_eq!(error.code, case.code, "{}: {}", case.name, error.message);
    assert!(error.message.contains(case.message), "{}: {:?} lacks {:?}", case.name, error.message, case.message);
    assert_eq!(error.outcome, Outcome::Failed, "{}", case.name);
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
        Case { name: "empty key", code: InvalidArgument, message: "the key is empty" },
    );
    expect_error(
        client.get("").await,
        Case { name: "empty key on read", code: InvalidArgument, message: "the key is empty" },
    );
    expect_error(
        client.put(vec![b'k'; 1025], "v", None).await,
        Case { name: "key over 1 KiB", code: InvalidArgument, message: "the key is 1025 bytes; the limit is 1024" },
    );
    expect_error(
        client.put("reg", vec![b'v'; 4097], None).await,
        Case {
            name: "value over the limit",
            code: InvalidArgument,
            message: "the value is 4097 bytes; the limit is 4096",
        },
    );
    expect_error(
        client.set_add("set", vec![vec![b'm'; 4097]]).await,
        Case { name: "member over the limit", code: InvalidArgument, message: "a set member is 4097 bytes" },
    );
    expect_error(
        client.set_add("set", vec![]).await,
        Case { name: "no members", code: InvalidArgument, message: "SetAdd needs at least one member" },
    );
    expect_error(
        client.increment("set", 1).await,
        Case {
            name: "increment on a set",
            code: FailedPrecondition,
            message: "the key holds a set; Increment needs a counter",
        },
    );
    expect_error(
        client.put("ctr", "v", None).await,
        Case {
            name: "put on a counter",
            code: FailedPrecondition,
            message: "the key holds a counter; Put needs a register",
        },
    );
    expect_error(
        client.set_members("reg").await,
        Case { name: "members of a register", code: FailedPrecondition, message: "the key holds a register" },
    );
    expect_error(
        client.increment("ctr", i64::MAX).await,
        Case { name: "counter overflow", code: FailedPrecondition, message: "overflows a 64-bit counter" },
    );
    expect_error(
        client
            .put_request(pb::PutRequest { key: b"reg".to_vec(), value: b"v".to_vec(), ttl_ms: Some(-5), fence: None })
            .await,
        Case { name: "negative TTL", code: InvalidArgument, message: "a TTL must be positive; got -5 ms" },
    );
    expect_error(
        client
            .put_request(pb::PutRequest { key: b"reg".to_vec(), value: b"v".to_vec(), ttl_ms: Some(0), fence: None })
            .await,
        Case { name: "zero TTL", code: InvalidArgument, message: "a TTL must be positive; got 0 ms" },
    );
    expect_error(
        client.expire_ms("reg", 400 * 365 * 24 * 3600 * 1000).await,
        Case { name: "absurd TTL", code: InvalidArgument, message: "over the limit" },
    );
    expect_error(
        client.expire_ms("missing", 1000).await,
        Case { name: "expire on a missing key", code: FailedPrecondition, message: "does not exist" },
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
    assert_eq!(results[2].as_ref().unwrap_err().code, InvalidArgument);
    assert_eq!(results[3].as_ref().unwrap_err().code, InvalidArgument);

    // Nothing else changed.
    assert_eq!(client.get("reg").await.unwrap().unwrap().value, Value::Register(b"original".to_vec()));
    assert_eq!(client.get("reg").await.unwrap().unwrap().expires_at_unix_ms, None);
    assert_eq!(client.get("ctr").await.unwrap().unwrap().value, Value::Counter(6));
    assert_eq!(client.set_members("set").await.unwrap(), Some(vec![b"a".to_vec()]));
    assert_eq!(client.get("missing").await.unwrap(), None);
}
