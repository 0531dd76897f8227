//! Cluster mode: one tenant limit across several hosts, escrowed in etcd.
//!
//! Each host holds a share of every limited tenant's limit (see `plan.rs`
//! for its two parts and the arithmetic); the local ledger checks growth
//! against it in memory (`quota/shares.rs`), so a write waits on the
//! network only when it needs more than the host holds, and then at most
//! `[cluster] wait_ms` before `EDQUOT`. Everything that talks to etcd runs
//! in the agent (`agent.rs`) on its own thread with its own single-threaded
//! tokio runtime: FUSE request threads only ever send it a message
//! (non-blocking) and wait on the ledger's condition variable.

mod agent;
mod keys;
mod plan;
mod report;
mod store;

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

pub use report::{ClusterHost, ClusterReport, ClusterTenant};

use crate::config::{ClusterConfig, Config, Limit};
use crate::quota::Ledger;

/// How long a control request (limit change, report) waits for the agent.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the rest of the daemon asks of the agent.
pub(crate) enum Command {
    /// A write needs this host to hold `bytes` of `tenant` in total.
    Want { tenant: String, bytes: u64 },
    /// `spoolfs quota set|unset --tenant`: `None` removes the limit.
    SetLimit {
        tenant: String,
        limit: Option<Limit>,
        reply: std_mpsc::Sender<Result<(), String>>,
    },
    Report {
        reply: std_mpsc::Sender<Result<ClusterReport, String>>,
    },
    /// The spool is unmounted: give the spare back now, not at the lease's
    /// expiry, and publish the final usage.
    Stop {
        reply: std_mpsc::Sender<Result<(), String>>,
    },
}

/// The running agent, for the control interface.
pub struct Cluster {
    commands: mpsc::UnboundedSender<Command>,
}

static RUNNING: OnceLock<Cluster> = OnceLock::new();

/// The agent of this daemon, when `[cluster]` is configured.
pub fn running() -> Option<&'static Cluster> {
    RUNNING.get()
}

/// How long `spoolfs mount` waits for the agent to register before it
/// serves anyway (with no tenant growing until registration).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// After the unmount, if in a cluster: gives the spare back at once.
pub fn stop_if_running() {
    if let Some(cluster) = running()
        && let Err(e) = cluster.stop()
    {
        log::warn!(
            "cluster: could not give the spare back ({e}); it returns when the lease expires"
        );
    }
}

/// Starts the agent if the configuration has a `[cluster]` section.
pub fn start_if_configured(config: &Config, ledger: &Arc<Ledger>) -> Result<(), String> {
    match ClusterConfig::of(config).map_err(|e| e.to_string())? {
        Some(cluster) => start(ledger.clone(), cluster, REGISTER_TIMEOUT),
        None => Ok(()),
    }
}

/// Starts the agent for `ledger` (after the start-up scan) and waits, at
/// most `register_timeout`, until it has registered this host's usage and
/// learned the cluster's limits. Until then no tenant grows, so a
/// restarted host never serves writes on stale limits.
pub fn start(
    ledger: Arc<Ledger>,
    config: ClusterConfig,
    register_timeout: Duration,
) -> Result<(), String> {
    let (commands, inbox) = mpsc::unbounded_channel();
    let want = commands.clone();
    ledger.enable_shares(
        config.wait,
        Box::new(move |tenant: &str, bytes: u64| {
            let tenant = tenant.to_string();
            let _ = want.send(Command::Want { tenant, bytes });
        }),
    );
    let (registered, on_registered) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a single-threaded tokio runtime");
            runtime.block_on(agent::Agent::new(ledger, config).run(inbox, registered));
        })
        .map_err(|e| format!("cluster agent thread: {e}"))?;
    if RUNNING.set(Cluster { commands }).is_err() {
        return Err("cluster agent started twice".into());
    }
    if on_registered.recv_timeout(register_timeout).is_err() {
        log::warn!(
            "cluster: not registered with etcd after {} s; serving, but no tenant grows until it is",
            register_timeout.as_secs()
        );
    }
    Ok(())
}

impl Cluster {
    /// Sets (`Some`) or removes (`None`) a tenant's limit for every host.
    pub fn set_limit(&self, tenant: &str, limit: Option<Limit>) -> Result<(), String> {
        self.ask(|reply| Command::SetLimit {
            tenant: tenant.to_string(),
            limit,
            reply,
        })
    }

    /// After the unmount: returns this host's spare headroom to the pool
    /// at once (its claim, covering its data, stays).
    pub fn stop(&self) -> Result<(), String> {
        self.ask(|reply| Command::Stop { reply })
    }

    pub fn report(&self) -> Result<ClusterReport, String> {
        self.ask(|reply| Command::Report { reply })
    }

    fn ask<T>(
        &self,
        command: impl FnOnce(std_mpsc::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        let (reply, answer) = std_mpsc::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| "the cluster agent has stopped".to_string())?;
        answer
            .recv_timeout(CONTROL_TIMEOUT)
            .map_err(|_| "etcd did not answer in time".to_string())?
    }
}
