//! Log lines under systemd: when stderr is the journal stream named by
//! `$JOURNAL_STREAM`, no timestamp and a syslog priority prefix; elsewhere
//! env_logger's usual timestamped lines.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_spoolfs");

/// Runs `spoolfs mount` with the built-in default on a mount point that is
/// already mounted (`/proc`): it logs its INFO line about the default, then
/// refuses to mount over it. Returns the first line of its stderr.
fn first_log_line(journal_stream_names_stderr: bool) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("stderr");
    let log = fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["mount", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("/proc")
        .env("RUST_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if journal_stream_names_stderr {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    } else {
        // Set, but naming something else (stderr was redirected).
        cmd.env(
            "JOURNAL_STREAM",
            format!("{}:{}", meta.dev(), meta.ino() + 1),
        );
    }
    let status = cmd.status().unwrap();
    assert!(!status.success());
    let text = fs::read_to_string(&log_path).unwrap();
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn under_the_journal_lines_have_a_priority_and_no_timestamp() {
    let line = first_log_line(true);
    assert!(
        line.starts_with("<6>[INFO  spoolfs::mount] no --config: built-in default"),
        "{line}"
    );
}

#[test]
fn elsewhere_lines_keep_their_timestamp() {
    let line = first_log_line(false);
    assert!(line.starts_with("[20"), "{line}");
    assert!(line.contains("INFO  spoolfs::mount] no --config"), "{line}");
}
