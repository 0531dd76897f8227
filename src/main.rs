//! The `spoolfs` command: parses arguments, then calls the library.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use spoolfs::cli::{Cli, Command, QuotaAction};
use spoolfs::cluster::ClusterReport;
use spoolfs::config::{Config, format_size};
use spoolfs::control::{self, Answer, Request};
use spoolfs::mount::{self, MountArgs};
use spoolfs::quota::Report;

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
        Command::Usage {
            json,
            requests: true,
            path,
            ..
        } => requests(&path, json),
        Command::Usage {
            json,
            cluster: true,
            path,
            ..
        } => cluster_usage(&path, json),
        Command::Usage { json, path, .. } => usage(&path, json),
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
    let metrics = spoolfs::config::MetricsConfig::of(&config).map_err(|e| e.to_string())?;
    let cluster = spoolfs::config::ClusterConfig::of(&config).map_err(|e| e.to_string())?;
    print!("{}", config.describe());
    println!("{}", metrics.describe());
    println!("{}", spoolfs::config::ClusterConfig::describe(&cluster));
    println!("{}: OK", path.display());
    Ok(())
}

fn usage(path: &Path, json: bool) -> Result<(), String> {
    match control::ask(path, &Request::Usage)? {
        Answer::Report(r) => print_report(&r, json, Report::to_table),
        Answer::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// A report as JSON for scripts, else as a table for people.
fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    table: impl FnOnce(&T) -> String,
) -> Result<(), String> {
    match json {
        true => println!("{}", serde_json::to_string_pretty(report).expect("json")),
        false => print!("{}", table(report)),
    }
    Ok(())
}

fn cluster_usage(path: &Path, json: bool) -> Result<(), String> {
    match control::ask(path, &Request::ClusterUsage)? {
        Answer::Cluster(r) => print_report(&r, json, ClusterReport::to_table),
        Answer::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn requests(path: &Path, json: bool) -> Result<(), String> {
    let counts = match control::ask(path, &Request::Requests)? {
        Answer::Requests(counts) => counts,
        Answer::Error(e) => return Err(e),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&counts).expect("json"));
        return Ok(());
    }
    let total: u64 = counts.requests.values().sum();
    let mut rows: Vec<_> = counts.requests.into_iter().collect();
    rows.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    println!("{:<16} {:>12}", "OPERATION", "REQUESTS");
    for (op, n) in rows {
        println!("{op:<16} {n:>12}");
    }
    println!("{total} requests, {} over io_uring", counts.over_io_uring);
    Ok(())
}

fn quota(action: QuotaAction) -> Result<(), String> {
    let (path, req) = match action {
        QuotaAction::Get { scope, path } => (path, Request::QuotaGet { scope: scope.arg() }),
        QuotaAction::Set { scope, limit, path } => (
            path,
            Request::QuotaSet {
                scope: scope.arg(),
                limit,
            },
        ),
        QuotaAction::Unset { scope, path } => (path, Request::QuotaUnset { scope: scope.arg() }),
    };
    match control::ask(&path, &req)? {
        Answer::Done(what) => {
            println!("{what}");
            Ok(())
        }
        Answer::Limit { limit, used } => {
            let limit = limit.map(format_size).unwrap_or_else(|| "none".into());
            println!("limit {limit} used {} ({used} bytes)", format_size(used));
            Ok(())
        }
        Answer::Error(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}
