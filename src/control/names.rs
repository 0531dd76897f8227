//! Which names can be mailboxes and tenants under the configured layout,
//! so that `quota set` refuses a limit that could never apply (it would
//! sit in `limits.json` while the real mailbox stays unlimited).

use crate::config::LayoutConfig;
use crate::layout::FolderRef;

use super::ScopeArg;

/// Directories at a Cyrus partition's top that are never mailboxes.
const CYRUS_RESERVED: &[&str] = &["domain", "uuid", "stage.", "sync.", "lost+found", "DELETED"];

/// `Err` says what is wrong and the form expected.
pub fn check(layout: &LayoutConfig, scope: &ScopeArg) -> Result<(), String> {
    match (layout, scope) {
        (LayoutConfig::None, _) => Err(
            "the configured layout is \"none\": nothing is charged to any mailbox or tenant, \
             so no limit can apply (set [layout] in the configuration)"
                .to_string(),
        ),
        (_, ScopeArg::Tenant(name)) => check_tenant(layout, name),
        (LayoutConfig::Cyrus { default_tenant, .. }, ScopeArg::Mailbox(name)) => {
            check_cyrus(default_tenant.as_deref(), name)
        }
        (LayoutConfig::Pattern { pattern, .. }, ScopeArg::Mailbox(name)) => {
            check_pattern(pattern, name)
        }
    }
}

/// For a name with no data yet: what the operator may have meant.
pub fn hint(layout: &LayoutConfig, scope: &ScopeArg) -> Option<String> {
    let (LayoutConfig::Cyrus { .. }, ScopeArg::Mailbox(name)) = (layout, scope) else {
        return None;
    };
    let folder = FolderRef::parse_display(name).ok()?;
    (!folder.folder.starts_with("user/"))
        .then(|| format!("{name:?} names a shared mailbox; a user's is user/NAME@DOMAIN"))
}

fn check_tenant(layout: &LayoutConfig, name: &str) -> Result<(), String> {
    if let LayoutConfig::Pattern { pattern, .. } = layout
        && !pattern.contains("{tenant}")
    {
        return Err(format!(
            "tenant {name:?}: the layout {pattern:?} has no {{tenant}}, so there are no tenants"
        ));
    }
    let bad = name.trim().is_empty()
        || name.starts_with('.')
        || name.contains(['/', '@'])
        || name.chars().any(char::is_whitespace);
    if bad {
        let form = match layout {
            LayoutConfig::Cyrus { .. } => "a mail domain, e.g. example.org",
            _ => "one directory name, e.g. example.org",
        };
        return Err(format!("tenant {name:?}: a tenant is {form}"));
    }
    Ok(())
}

fn check_cyrus(default_tenant: Option<&str>, name: &str) -> Result<(), String> {
    let example = format!("user/john@{}", default_tenant.unwrap_or("example.org"));
    let expected = |why: &str| {
        format!(
            "mailbox {name:?}: {why}; under the Cyrus layout a user's mailbox is \
             user/NAME@DOMAIN, e.g. {example}"
        )
    };
    let folder = FolderRef::parse_display(name).map_err(|e| expected(&e))?;
    if folder.tenant.is_none()
        && let Some(tenant) = default_tenant
    {
        return Err(expected(&format!(
            "no @DOMAIN (mailboxes without a domain belong to tenant {tenant})"
        )));
    }
    let first = folder.folder.split('/').next().unwrap_or_default();
    if folder.folder == "user" {
        return Err(expected("\"user\" without a user name"));
    }
    if CYRUS_RESERVED.contains(&first) || first.starts_with('.') {
        return Err(expected(&format!(
            "{first:?} is a Cyrus directory, not a mailbox"
        )));
    }
    Ok(())
}

fn check_pattern(pattern: &str, name: &str) -> Result<(), String> {
    let with_tenant = pattern.contains("{tenant}");
    let form = if with_tenant {
        "MAILBOX@TENANT, e.g. john@example.org"
    } else {
        "MAILBOX, e.g. john"
    };
    let expected = |why: &str| {
        format!("mailbox {name:?}: {why}; under the layout {pattern:?} a mailbox is named {form}")
    };
    let folder = FolderRef::parse_display(name).map_err(|e| expected(&e))?;
    if folder.folder.contains('/') {
        return Err(expected("a mailbox is one directory name"));
    }
    if folder.folder.starts_with('.')
        || folder.tenant.as_deref().is_some_and(|t| t.starts_with('.'))
    {
        return Err(expected("hidden directories are never mailboxes"));
    }
    match (with_tenant, &folder.tenant) {
        (true, None) => Err(expected("no @TENANT")),
        (false, Some(_)) => Err(expected("this layout has no tenants")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cyrus(default_tenant: Option<&str>) -> LayoutConfig {
        LayoutConfig::Cyrus {
            partition_depth: 1,
            default_tenant: default_tenant.map(str::to_string),
            metadata_names: Vec::new(),
        }
    }

    fn mailbox(name: &str) -> ScopeArg {
        ScopeArg::Mailbox(name.to_string())
    }

    #[test]
    fn cyrus_names() {
        let (plain, defaulted) = (cyrus(None), cyrus(Some("example.org")));
        for ok in [
            "user/john@example.org",
            "user/john/Archive@example.org",
            "shared@example.org",
        ] {
            check(&plain, &mailbox(ok)).unwrap();
            check(&defaulted, &mailbox(ok)).unwrap();
        }
        check(&plain, &mailbox("user/john")).unwrap();
        let e = check(&defaulted, &mailbox("user/john")).unwrap_err();
        assert!(
            e.contains("user/NAME@DOMAIN") && e.contains("user/john@example.org"),
            "{e}"
        );
        for bad in [
            "user@example.org",
            "user",
            "domain/x@example.org",
            "stage./x",
            "",
            "user/../x",
        ] {
            let e = check(&plain, &mailbox(bad)).unwrap_err();
            assert!(e.contains("user/NAME@DOMAIN"), "{bad}: {e}");
        }
        for bad in ["", "user/john@example.org", "a b", ".x"] {
            assert!(
                check(&plain, &ScopeArg::Tenant(bad.into())).is_err(),
                "{bad}"
            );
        }
        check(&plain, &ScopeArg::Tenant("example.org".into())).unwrap();
    }

    #[test]
    fn pattern_names() {
        let with = LayoutConfig::Pattern {
            pattern: "{tenant}/{mailbox}/**".into(),
            metadata_names: Vec::new(),
        };
        check(&with, &mailbox("john@example.org")).unwrap();
        let e = check(&with, &mailbox("john")).unwrap_err();
        assert!(e.contains("MAILBOX@TENANT"), "{e}");
        assert!(check(&with, &mailbox("user/john@example.org")).is_err());
        let without = LayoutConfig::Pattern {
            pattern: "{mailbox}/Maildir/**".into(),
            metadata_names: Vec::new(),
        };
        check(&without, &mailbox("john")).unwrap();
        assert!(check(&without, &mailbox("john@example.org")).is_err());
        assert!(check(&without, &ScopeArg::Tenant("example.org".into())).is_err());
    }

    #[test]
    fn no_layout_takes_no_limits() {
        assert!(check(&LayoutConfig::None, &mailbox("user/john")).is_err());
    }
}
