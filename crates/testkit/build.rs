//! Interop-peer probes for this crate's tests (see `probe.rs`).
include!("probe.rs");

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    probe(&Path::new(&manifest).join("../.."));
}
