//! The command line's definition, in the library so that man pages and
//! shell completions are generated from the same source the binary parses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::control::ScopeArg;

#[derive(Parser)]
#[command(
    name = "spoolfs",
    version,
    about = "A FUSE filesystem for mail spools with routed partitions and write-time quotas",
    after_help = "One spool is served by one daemon: a second `spoolfs mount` over a partition \
                  or state_dir already in use is refused, naming the PID that serves it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Mount a spool and serve it in the foreground until unmounted or signalled.
    #[command(after_help = crate::mount::options::HELP)]
    Mount {
        /// Configuration file; without it, a built-in default over --data-dir.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where the built-in default keeps its partitions (created if missing).
        #[arg(long, value_name = "DIR", default_value = "spoolfs-data")]
        data_dir: PathBuf,
        /// Mount options, comma-separated as in fstab (e.g. allow_other,noatime); see below.
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Option<String>,
        /// Existing empty directory to mount on; refused if it already is a mount point.
        mountpoint: PathBuf,
    },
    /// Validate a configuration and print what it would do.
    Check {
        /// Configuration file to check.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Usage per tenant and mailbox: used, limit, percent, partition.
    Usage {
        /// Print JSON for scripts (with percent and bytes per partition).
        #[arg(long)]
        json: bool,
        /// Instead of usage: the FUSE requests served since the mount, by
        /// operation (JSON: {"requests": {"write": N, ...}}).
        #[arg(long, conflicts_with = "cluster")]
        requests: bool,
        /// Cluster mode: per tenant its limit and total use across every
        /// host, and per host what it stores and holds of it (from etcd; JSON:
        /// {"tenants":[{"name","limit","used","hosts":[{"host","used","allocated"}]}]}).
        #[arg(long)]
        cluster: bool,
        /// Any path inside the spoolfs mount.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Read or change a limit at run time (root or a configured admin only).
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
    },
}

#[derive(Subcommand)]
pub enum QuotaAction {
    /// Show the limit that applies and the bytes used.
    #[command(
        after_help = "Example:\n  spoolfs quota get --mailbox user/john@example.org /var/spool/cyrus"
    )]
    Get {
        #[command(flatten)]
        scope: ScopeOpt,
        /// Any path inside the spoolfs mount.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Set a run-time limit (kept across restarts); a mailbox with no data yet may be given one.
    #[command(
        after_help = "Example:\n  spoolfs quota set --tenant example.org 5G /var/spool/cyrus"
    )]
    Set {
        #[command(flatten)]
        scope: ScopeOpt,
        /// Bytes with an optional K/M/G/T suffix (powers of 1024), or "none" for unlimited.
        limit: String,
        /// Any path inside the spoolfs mount.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
    /// Drop the run-time limit: the configured one applies again.
    #[command(
        after_help = "Example:\n  spoolfs quota unset --mailbox user/john@example.org /var/spool/cyrus"
    )]
    Unset {
        #[command(flatten)]
        scope: ScopeOpt,
        /// Any path inside the spoolfs mount.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ScopeOpt {
    /// A tenant (customer): with the Cyrus layout, its mail domain, e.g. example.org.
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// A mailbox, e.g. user/john@example.org (Cyrus) or john@example.org (pattern layout).
    #[arg(long, value_name = "NAME")]
    mailbox: Option<String>,
}

impl ScopeOpt {
    pub fn arg(&self) -> ScopeArg {
        match (&self.tenant, &self.mailbox) {
            (Some(t), _) => ScopeArg::Tenant(t.clone()),
            (_, Some(m)) => ScopeArg::Mailbox(m.clone()),
            _ => unreachable!("clap requires one"),
        }
    }
}
