//! The measuring harnesses' shared parts: child processes and what the
//! kernel says about them, the load both harnesses drive, rathole beside
//! us, and many idle tunnels. `edge-bench` measures speed and memory;
//! `edge-soak` runs 1,000 boxes under faults and counts what was lost.

pub mod clients;
pub mod load;
pub mod procs;
pub mod rathole;
pub mod scaling;
pub mod storm;
pub mod syscalls;
pub mod tunnels;
pub mod wrk;

/// The benches' signed-in user: a session of `user` for an hour, made in
/// `store` with the key of the api-server over `data_dir`; its cookie.
pub async fn sign_in(
    store: &store::Store,
    data_dir: &std::path::Path,
    user: edge_core::UserId,
) -> anyhow::Result<String> {
    Ok(
        api_server::session::sign_in_over_data_dir(store, data_dir, user, "bench", 3_600_000)
            .await?,
    )
}
