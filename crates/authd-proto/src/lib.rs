//! authd's protobuf API, package `auth.v1` (the `.proto` files are in the workspace's `proto/`),
//! and Envoy's external authorization API that authd also serves (`envoy`, trimmed and
//! wire-compatible, from `third_party/proto/`): messages, tonic client stubs (feature `client`)
//! and server traits (feature `server`), and the encoded file descriptor set that reflection
//! serves.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("auth.v1");

/// `envoy.service.auth.v3` (`Authorization/Check`) and the parts of Envoy's API it uses.
pub mod envoy {
    pub mod service {
        pub mod auth {
            pub mod v3 {
                tonic::include_proto!("envoy.service.auth.v3");
            }
        }
    }
    pub mod config {
        pub mod core {
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    pub mod r#type {
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

/// `google.rpc.Status`, as Envoy's `CheckResponse` carries it.
pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// The encoded `FileDescriptorSet` of `auth.v1`, of Envoy's `envoy.service.auth.v3` (trimmed),
/// and of the types they import.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("authd_descriptor");
