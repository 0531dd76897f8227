//! Log set-up: `env_logger` with `RUST_LOG` (default `info`).
//!
//! Run by systemd with stderr going to the journal, lines carry no
//! timestamp (the journal stamps every line itself) and start with a
//! syslog priority prefix (`<4>` for WARN) so the journal files them
//! at the right level. Elsewhere — a terminal, the fstab helper's
//! `/var/log/spoolfs.log` — lines keep env_logger's timestamp.
//!
//! "Stderr goes to the journal" is decided as systemd.exec(5) advises:
//! `$JOURNAL_STREAM` holds `DEVICE:INODE` of the journal stream systemd
//! connected, and it counts only if stderr is still that stream (a
//! process started under systemd may have had its stderr redirected).

use std::io::Write;
use std::os::fd::AsRawFd;

use log::Level;

pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if stderr_is_journal() {
        builder.format(|buf, record| {
            writeln!(
                buf,
                "<{}>[{:<5} {}] {}",
                syslog_priority(record.level()),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    builder.init();
}

/// Whether stderr is the journal stream systemd set up for this process.
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(std::io::stderr().as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    journal_stream_is(&var.to_string_lossy(), st.st_dev, st.st_ino)
}

/// `$JOURNAL_STREAM` (`"DEVICE:INODE"`, decimal) names this device and inode.
pub fn journal_stream_is(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// sd-daemon(3) priorities: the journal strips the prefix and files the
/// line at that level.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr_exactly() {
        assert!(journal_stream_is("64:12345", 64, 12345));
        assert!(journal_stream_is("64:12345\n", 64, 12345));
        assert!(!journal_stream_is("64:12346", 64, 12345));
        assert!(!journal_stream_is("65:12345", 64, 12345));
        assert!(!journal_stream_is("", 64, 12345));
        assert!(!journal_stream_is("64", 64, 12345));
        assert!(!journal_stream_is("x:y", 64, 12345));
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(syslog_priority(Level::Error), 3);
        assert_eq!(syslog_priority(Level::Warn), 4);
        assert_eq!(syslog_priority(Level::Info), 6);
        assert_eq!(syslog_priority(Level::Debug), 7);
    }
}
