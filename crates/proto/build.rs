//! Generates the gRPC code from `proto/` with protox (a protobuf compiler in Rust), so no system `protoc`
//! is needed. The descriptor set is also written out for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): cargo shares a build script's compiled binary between checkouts
    // of the same workspace that use one target directory, so a path baked in at compile time could point
    // at another checkout's protos.
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "geostore/v1/kv.proto",
        "geostore/v1/replication.proto",
        "geostore/v1/cluster.proto",
        "geostore/v1/lock.proto",
        "geostore/v1/raft.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let descriptors = protox::compile(files, [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("geostore_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;

    // etcd's lock API, for the benchmark that runs etcd beside geostore: clients only, not reflected.
    let peers = ["peers/etcdserverpb.proto", "peers/v3lockpb.proto"];
    for file in peers {
        println!("cargo:rerun-if-changed={}", proto_root.join(file).display());
    }
    let peer_descriptors = protox::compile(peers, [&proto_root])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(peer_descriptors)?;
    Ok(())
}
