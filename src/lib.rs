//! spoolfs: a FUSE filesystem for mail spools with routed partitions and
//! write-time per-mailbox / per-tenant byte limits.
//!
//! The crate is a library with a thin binary (`src/main.rs`). The filesystem
//! core (`fs`) decides; `fuse` only adapts kernel requests to it.

pub mod backing;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod invalidate;
pub mod layout;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod mount;
pub mod quota;
pub mod routing;
pub mod scan;
pub mod sdnotify;
