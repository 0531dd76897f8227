//! The `spoolfs` command: parses arguments, then calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use spoolfs::config::{Config, format_size};
use spoolfs::control::{self, Answer, Request, ScopeArg};
use spoolfs::mount::{self, MountArgs};

#[derive(Parser)]
#[command(
    name = "spoolfs",
    version,
    about = "A FUSE filesystem for mail spools with routed partitions and write-time quotas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum QuotaAction {
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
struct ScopeOpt {
    #[arg(long)]
    tenant: Option<String>,
    /// e.g. user/john@example.org
    #[arg(long)]
    mailbox: Option<String>,
}

impl ScopeOpt {
    fn arg(&self) -> ScopeArg {
        match (&self.tenant, &self.mailbox) {
            (Some(t), _) => ScopeArg::Tenant(t.clone()),
            (_, Some(m)) => ScopeArg::Mailbox(m.clone()),
            _ => unreachable!("clap requires one"),
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount {
            config,
            data_dir,
            options,
            mountpoint,
        } => mount::run(MountArgs {
            config,
            data_dir,
            options,
            mountpoint,
        }),
        Command::Check { config } => check(&config),
        Command::Usage { json, mountpoint } => usage(&mountpoint, json),
        Command::Quota { action } => quota(action),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spoolfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> Result<(), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    config.check_filesystem(None).map_err(|e| e.to_string())?;
    print!("{}", config.describe());
    println!("{}: OK", path.display());
    Ok(())
}

fn usage(mountpoint: &Path, json: bool) -> Result<(), String> {
    match control::ask(mountpoint, &Request::Usage)? {
        Answer::Report(r) if json => {
            println!("{}", serde_json::to_string_pretty(&r).expect("json"))
        }
        Answer::Report(r) => print!("{}", r.to_table()),
        Answer::Error(e) => return Err(e),
        other => return Err(format!("unexpected answer {other:?}")),
    }
    Ok(())
}

fn quota(action: QuotaAction) -> Result<(), String> {
    let (mountpoint, req) = match action {
        QuotaAction::Get { scope, mountpoint } => {
            (mountpoint, Request::QuotaGet { scope: scope.arg() })
        }
        QuotaAction::Set {
            scope,
            limit,
            mountpoint,
        } => (
            mountpoint,
            Request::QuotaSet {
                scope: scope.arg(),
                limit,
            },
        ),
        QuotaAction::Unset { scope, mountpoint } => {
            (mountpoint, Request::QuotaUnset { scope: scope.arg() })
        }
    };
    match control::ask(&mountpoint, &req)? {
        Answer::Ok => Ok(()),
        Answer::Limit { limit, used } => {
            let limit = limit.map(format_size).unwrap_or_else(|| "none".into());
            println!("limit {limit} used {} ({used} bytes)", format_size(used));
            Ok(())
        }
        Answer::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
