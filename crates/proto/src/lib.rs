//! The generated gRPC API, package `geostore.v1`. The `.proto` files in the repository's `proto/` folder
//! are the source of truth.

#![warn(missing_docs)]

pub mod net;
pub mod outcome;
pub mod token;

/// The messages and the client and server stubs of package `geostore.v1`, generated at build time from
/// `proto/geostore/v1/*.proto` (the comments there are the documentation of each message and field).
#[allow(missing_docs)]
pub mod v1 {
    #![allow(clippy::all)]
    tonic::include_proto!("geostore.v1");
}

/// Clients for the parts of etcd's v3 API that the lock benchmark drives (etcd runs beside geostore there).
pub mod etcd {
    /// etcd's `etcdserverpb` package, as far as the benchmark uses it (the lease service), clients only.
    #[allow(missing_docs)]
    pub mod etcdserverpb {
        #![allow(clippy::all, non_snake_case)]
        tonic::include_proto!("etcdserverpb");
    }
    /// etcd's `v3lockpb` package (the lock service), clients only.
    #[allow(missing_docs)]
    pub mod v3lockpb {
        #![allow(clippy::all)]
        tonic::include_proto!("v3lockpb");
    }
}

/// The encoded descriptor set of every geostore proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/geostore_descriptor.bin"));
