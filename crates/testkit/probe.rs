// Included by the build scripts of `testkit` and `devstack`: finds which
// interop peers this machine has and sets a cfg for each (`has_go`,
// `has_chromium`, `has_oidc_provider`, `has_initdb`, `has_redis`,
// `has_prometheus`: `prometheus` and `promtool`, `has_schemathesis`), plus
// `require_interop` when REQUIRE_INTEROP=1. Tests that need a peer carry
// `#[cfg_attr(not(any(has_x, require_interop)), ignore = "needs …")]`, so a
// run without the peer reports them as skipped rather than passed, and a
// run that requires interop runs (and fails) them anyway.

use std::path::{Path, PathBuf};

fn on_path(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(cmd))
        .find(|p| p.is_file())
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn probe(repo_root: &Path) {
    for env in ["REQUIRE_INTEROP", "CHROMIUM", "PATH"] {
        println!("cargo:rerun-if-env-changed={env}");
    }
    for cfg in [
        "has_go",
        "has_chromium",
        "has_oidc_provider",
        "has_initdb",
        "has_redis",
        "has_prometheus",
        "has_schemathesis",
        "require_interop",
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    if std::env::var("REQUIRE_INTEROP").as_deref() == Ok("1") {
        println!("cargo:rustc-cfg=require_interop");
    }
    let gocode = Path::new("/usr/share/gocode/src/github.com");
    let go = on_path("go");
    if go.is_some()
        && gocode.join("hashicorp/yamux").is_dir()
        && gocode.join("gorilla/websocket").is_dir()
    {
        println!("cargo:rustc-cfg=has_go");
    }
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if chromium.is_file() {
        println!("cargo:rustc-cfg=has_chromium");
    }
    let provider = repo_root.join("interop/oidc-provider/node_modules/oidc-provider");
    if on_path("node").is_some() && provider.is_dir() {
        println!("cargo:rustc-cfg=has_oidc_provider");
    }
    let initdb = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|e| e.path().join("bin/initdb").is_file());
    if initdb {
        println!("cargo:rustc-cfg=has_initdb");
    }
    if on_path("redis-server").is_some() {
        println!("cargo:rustc-cfg=has_redis");
    }
    if on_path("prometheus").is_some() && on_path("promtool").is_some() {
        println!("cargo:rustc-cfg=has_prometheus");
    }
    if on_path("schemathesis").is_some() {
        println!("cargo:rustc-cfg=has_schemathesis");
    }
    for p in [
        chromium,
        provider,
        PathBuf::from("/usr/lib/postgresql"),
        gocode.to_path_buf(),
    ] {
        watch(&p);
    }
    if let Some(go) = go {
        watch(&go);
    }
}
