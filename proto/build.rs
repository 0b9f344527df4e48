//! Compiles the API with protox (no `protoc` needed) and generates tonic code from it.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "mailplane/v1/accounts.proto",
        "mailplane/v1/credentials.proto",
        "mailplane/v1/tests.proto",
        "mailplane/v1/connectors.proto",
        "mailplane/v1/agent.proto",
        "mailplane/v1/tokens.proto",
        "mailplane/v1/audit.proto",
        "mailplane/v1/messages.proto",
        "mailplane/v1/replicas.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("mailplane_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The generated `connect` constructor would clash with AgentService.Connect; clients
        // are built from a channel instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
