//! authd's protobuf API, package `auth.v1` (the `.proto` files are in the workspace's `proto/`):
//! messages, tonic client stubs (feature `client`) and server traits (feature `server`), and the
//! encoded file descriptor set that reflection serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("auth.v1");

/// The encoded `FileDescriptorSet` of `auth.v1` and the well-known types it imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("authd_descriptor");
