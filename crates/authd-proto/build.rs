//! Compiles the workspace's `proto/auth/v1/*.proto` and the vendored, trimmed Envoy external
//! authorization API (`third_party/proto/`) with protox (no system `protoc`), generates messages
//! and the stubs the enabled features ask for, and writes the encoded file descriptor set beside
//! the generated code, for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(proto_dir.join("auth/v1"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    let vendored = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../third_party/proto");
    files.push(vendored.join("envoy/service/auth/v3/external_auth.proto"));
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    println!("cargo:rerun-if-changed={}", vendored.display());

    let fds = protox::compile(&files, [&proto_dir, &vendored])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("authd_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(std::env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        .compile_fds(fds)?;
    Ok(())
}
