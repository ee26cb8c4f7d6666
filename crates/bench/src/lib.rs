//! The measuring harnesses' shared parts: child processes and what the
//! kernel says about them, the load both harnesses drive, rathole beside
//! us, and many idle tunnels. `edge-bench` measures speed and memory;
//! `edge-soak` runs 1,000 boxes under faults and counts what was lost.

pub mod load;
pub mod procs;
pub mod rathole;
pub mod tunnels;
