//! spoolfs: a FUSE filesystem for mail spools with routed partitions and
//! write-time per-mailbox / per-tenant byte limits.
//!
//! The crate is a library with a thin binary (`src/main.rs`). The filesystem
//! core (`fs`) decides; `fuse` only adapts kernel requests to it.

pub mod config;
pub mod layout;
pub mod quota;
pub mod routing;
