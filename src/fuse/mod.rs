//! The kernel side: two transports over one request handler.
//!
//! - `handler.rs` serves each request: metrics, the core call, the errno
//!   (through `FsError::errno`, the one place errors are mapped), listing
//!   invalidation. Both transports call it; neither decides anything.
//! - `devfuse.rs` fuser's `Filesystem`: requests read from `/dev/fuse`.
//! - `uring/`     FUSE over io_uring: requests from per-CPU ring queues.
//! - `convert.rs` the core's types as fuser's.

mod convert;
mod devfuse;
mod handler;
pub mod uring;

pub use devfuse::FuseAdapter;
pub use handler::Handler;
