//! Run-time limit overrides and their file in `state_dir`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LIMITS_FILE, Scope};
use crate::config::Limit;
use crate::layout::FolderRef;

/// Run-time limits. A present key with `None` means explicitly unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Overrides {
    pub(super) mailboxes: BTreeMap<FolderRef, Limit>,
    pub(super) tenants: BTreeMap<String, Limit>,
}

pub(super) enum OverrideKey {
    Mailbox(FolderRef),
    Tenant(String),
}

impl OverrideKey {
    pub(super) fn parse(scope: &Scope) -> Result<OverrideKey, String> {
        match scope {
            Scope::Mailbox(name) => FolderRef::parse_display(name)
                .map(OverrideKey::Mailbox)
                .map_err(|e| format!("mailbox {name:?}: {e}")),
            Scope::Tenant(name) => {
                validate_tenant(name).map(|()| OverrideKey::Tenant(name.clone()))
            }
        }
    }
}

pub(super) fn validate_tenant(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("tenant name is empty".to_string());
    }
    Ok(())
}

impl Overrides {
    pub(super) fn apply(&mut self, key: &OverrideKey, limit: Option<Limit>) {
        match (key, limit) {
            (OverrideKey::Mailbox(root), Some(limit)) => {
                self.mailboxes.insert(root.clone(), limit);
            }
            (OverrideKey::Mailbox(root), None) => {
                self.mailboxes.remove(root);
            }
            (OverrideKey::Tenant(tenant), Some(limit)) => {
                self.tenants.insert(tenant.clone(), limit);
            }
            (OverrideKey::Tenant(tenant), None) => {
                self.tenants.remove(tenant);
            }
        }
    }

    pub(super) fn to_file(&self) -> LimitsFile {
        let mailboxes = self.mailboxes.iter();
        LimitsFile {
            mailboxes: mailboxes
                .map(|(root, limit)| (root.display(), *limit))
                .collect(),
            tenants: self.tenants.clone(),
        }
    }

    pub(super) fn from_file(file: LimitsFile) -> Result<Overrides, String> {
        let mut overrides = Overrides::default();
        for (name, limit) in file.mailboxes {
            let root =
                FolderRef::parse_display(&name).map_err(|e| format!("mailboxes.{name:?}: {e}"))?;
            overrides.mailboxes.insert(root, limit);
        }
        for (tenant, limit) in file.tenants {
            validate_tenant(&tenant).map_err(|e| format!("tenants.{tenant:?}: {e}"))?;
            overrides.tenants.insert(tenant, limit);
        }
        Ok(overrides)
    }
}

/// The on-disk form: `{"mailboxes": {"user/john@example.org": 1048576},
/// "tenants": {"example.org": null}}` — `null` is an explicit "unlimited".
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    #[serde(default)]
    pub(super) mailboxes: BTreeMap<String, Limit>,
    #[serde(default)]
    pub(super) tenants: BTreeMap<String, Limit>,
}

pub(super) fn load_overrides(state_dir: &Path) -> Result<Overrides, String> {
    let path = state_dir.join(LIMITS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Overrides::default()),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let file: LimitsFile = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a valid limits file: {e}", path.display()))?;
    Overrides::from_file(file).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces the limits file atomically: a crash leaves the old or the new
/// file, never a torn one.
pub(super) fn save_overrides(state_dir: &Path, overrides: &Overrides) -> Result<(), String> {
    let path = state_dir.join(LIMITS_FILE);
    let temporary = state_dir.join(format!("{LIMITS_FILE}.tmp.{}", std::process::id()));
    let mut text = serde_json::to_string_pretty(&overrides.to_file())
        .map_err(|e| format!("{}: cannot encode: {e}", path.display()))?;
    text.push('\n');
    let written = write_durably(state_dir, &temporary, &path, text.as_bytes());
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(|e| format!("{}: cannot save: {e}", path.display()))
}

pub(super) fn write_durably(
    dir: &Path,
    temporary: &Path,
    target: &Path,
    bytes: &[u8],
) -> io::Result<()> {
    // The daemon runs with umask 0: explicit modes, so nobody but root can
    // change the limits the next start will load.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o755)
        .create(dir)?;
    let mut file = std::os::unix::fs::OpenOptionsExt::mode(
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        0o644,
    )
    .open(temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(temporary, target)?;
    // The rename itself is only durable once the directory is synced.
    File::open(dir)?.sync_all()
}
