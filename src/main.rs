//! The `spoolfs` command: parses arguments, then calls the library.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use spoolfs::config::{Config, format_size};
use spoolfs::cli::{Cli, Command, QuotaAction};
use spoolfs::control::{self, Answer, Request};
use spoolfs::mount::{self, MountArgs};

fn main() -> ExitCode {
    spoolfs::logging::init();
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
