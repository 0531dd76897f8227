//! Which transport serves the mount (`[mount] io_uring`), decided in two
//! steps: before mounting from what the kernel has (so `on` refuses to
//! mount where it cannot be had), and after INIT from what the kernel
//! offered and whether it took the ring's entries. The log says which
//! transport serves, and why.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use log::{info, warn};

use crate::config::{Config, IoUringMode};
use crate::fuse::Handler;
use crate::fuse::uring::{self, Offer, Rings};

/// `SPOOLFS_IO_URING=auto|on|off` overrides `[mount] io_uring` (and
/// `-o io_uring=` overrides both): one transport for every daemon a test
/// run or a trial starts, without editing configurations.
pub const ENVIRONMENT: &str = "SPOOLFS_IO_URING";

pub fn apply_environment(config: &mut Config) -> Result<(), String> {
    let Some(value) = std::env::var_os(ENVIRONMENT) else {
        return Ok(());
    };
    let value = value.to_string_lossy();
    config.mount.io_uring = IoUringMode::parse(&value)
        .ok_or_else(|| format!("{ENVIRONMENT}={value}: expected auto, on or off"))?;
    Ok(())
}

/// Before mounting: whether INIT will ask for the ring.
pub fn offer(config: &Config) -> Result<Arc<Offer>, String> {
    let (wanted, why_not) = uring::decide(config.mount.io_uring)?;
    if let Some(why) = why_not {
        info!("requests over /dev/fuse: {why}");
    }
    Ok(Arc::new(Offer::new(wanted)))
}

/// After INIT: the ring queues, if the kernel offered the ring and took
/// them; `Err` only where `io_uring = "on"` cannot be honoured.
pub fn start(
    config: &Config,
    offer: &Offer,
    handler: Arc<Handler>,
    dev: OwnedFd,
) -> Result<Option<Rings>, String> {
    if !offer.wanted() {
        return Ok(None);
    }
    let mode = config.mount.io_uring;
    let refused = |why: String| -> Result<Option<Rings>, String> {
        if mode == IoUringMode::On {
            return Err(format!("io_uring is on, but {why}"));
        }
        warn!("requests over /dev/fuse: {why}");
        Ok(None)
    };
    if !offer.offered() {
        return refused("the kernel did not offer FUSE_OVER_IO_URING at INIT".into());
    }
    match uring::start(handler, dev, config.mount.threads, config.mount.handoff) {
        Ok(rings) => {
            let replies = match rings.not_handed_off() {
                None => "replies handed off (committed as SCHED_IDLE)".to_string(),
                Some(why) => format!("replies committed as ordinary threads: {why}"),
            };
            info!(
                "requests over io_uring: {} queues, {} threads on each online CPU's; {replies}",
                rings.queues, rings.per_queue
            );
            Ok(Some(rings))
        }
        Err(why) => refused(why),
    }
}
