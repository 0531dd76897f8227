//! The command line's definition, in the library so that man pages and
//! shell completions are generated from the same source the binary parses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::control::ScopeArg;

#[derive(Parser)]
#[command(
    name = "spoolfs",
    version,
    about = "A FUSE filesystem for mail spools with routed partitions and write-time quotas"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Mount a spool and serve it in the foreground until unmounted or signalled.
    Mount {
        /// Configuration file; without it, a built-in default over --data-dir.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the built-in default keeps its partitions (created if missing).
        #[arg(long, default_value = "spoolfs-data")]
        data_dir: PathBuf,
        /// Mount options as in fstab (allow_other, ro, ...); unknown ones are ignored.
        #[arg(short = 'o')]
        options: Option<String>,
        mountpoint: PathBuf,
    },
    /// Validate a configuration and print what it would do.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Usage per tenant and mailbox: used, limit, percent, partition.
    Usage {
        #[arg(long)]
        json: bool,
        mountpoint: PathBuf,
    },
    /// Read or change a limit at run time (root or a configured admin only).
    Quota {
        #[command(subcommand)]
        action: QuotaAction,
    },
}

#[derive(Subcommand)]
pub enum QuotaAction {
    Get {
        #[command(flatten)]
        scope: ScopeOpt,
        mountpoint: PathBuf,
    },
    /// LIMIT: bytes with an optional K/M/G/T suffix, or "none".
    Set {
        #[command(flatten)]
        scope: ScopeOpt,
        limit: String,
        mountpoint: PathBuf,
    },
    /// Drop the run-time limit: the configured one applies again.
    Unset {
        #[command(flatten)]
        scope: ScopeOpt,
        mountpoint: PathBuf,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct ScopeOpt {
    #[arg(long)]
    tenant: Option<String>,
    /// e.g. user/john@example.org
    #[arg(long)]
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
