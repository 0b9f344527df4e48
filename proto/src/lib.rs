//! mailplane's public gRPC API, package `mailplane.v1`.
//!
//! The `.proto` files live in `proto/mailplane/v1/`. The build compiles them with `protox`, a
//! protobuf compiler written in Rust, so a normal build needs no `protoc` on the machine.

/// Package `mailplane.v1`: the SMTP account and credential services and their messages.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("mailplane.v1");
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection so that any client
/// (grpcurl, Postman, other languages) can discover and call the API without our code.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mailplane_descriptor");
