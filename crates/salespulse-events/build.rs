//! Compiles `proto/salespulse/v1/events.proto` with the pure-Rust `protox` compiler (no system
//! `protoc` needed) and generates the prost types into `OUT_DIR/salespulse.v1.rs`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    println!("cargo:rerun-if-changed={proto_root}");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["salespulse/v1/events.proto"], [proto_root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
