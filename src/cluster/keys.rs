//! Where the cluster keeps what in etcd, under the configured prefix `P`:
//!
//! ```text
//! P/limit/<tenant>               the tenant's limit: bytes, or "none"
//! P/alloc/<tenant>/claim/<host>  the host's claim (no lease: covers its data)
//! P/alloc/<tenant>/spare/<host>  the host's spare headroom (on its lease)
//! P/used/<tenant>/<host>         bytes the host stores for the tenant
//! P/want/<tenant>/<host>         bytes a starved host needs (on its lease)
//! ```
//!
//! Tenant and host names are one key segment each: `%` and `/` in a
//! tenant name are escaped (host ids cannot contain `/`, see the config).

use crate::config::{Limit, parse_size};

#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    pub host: String,
}

/// A key under the prefix, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Limit { tenant: String },
    Claim { tenant: String, host: String },
    Spare { tenant: String, host: String },
    Used { tenant: String, host: String },
    Want { tenant: String, host: String },
}

impl Keys {
    pub fn new(prefix: &str, host: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            host: host.to_string(),
        }
    }

    /// Everything the cluster keeps (for watching and reports).
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn limits(&self) -> String {
        format!("{}/limit/", self.prefix)
    }

    pub fn limit(&self, tenant: &str) -> String {
        format!("{}/limit/{}", self.prefix, escape(tenant))
    }

    /// Every claim and spare of one tenant: the range its transactions
    /// compare revisions on.
    pub fn allocations(&self, tenant: &str) -> String {
        format!("{}/alloc/{}/", self.prefix, escape(tenant))
    }

    pub fn all_allocations(&self) -> String {
        format!("{}/alloc/", self.prefix)
    }

    pub fn claim(&self, tenant: &str) -> String {
        format!("{}claim/{}", self.allocations(tenant), self.host)
    }

    pub fn spare(&self, tenant: &str) -> String {
        format!("{}spare/{}", self.allocations(tenant), self.host)
    }

    pub fn used_of(&self, tenant: &str) -> String {
        format!("{}/used/{}/", self.prefix, escape(tenant))
    }

    pub fn used(&self, tenant: &str) -> String {
        format!("{}{}", self.used_of(tenant), self.host)
    }

    pub fn want(&self, tenant: &str) -> String {
        format!("{}/want/{}/{}", self.prefix, escape(tenant), self.host)
    }

    /// Parses a key under the prefix; `None` for anything else.
    pub fn parse(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let tenant = unescape(parts.get(1)?);
        let host = |i: usize| parts.get(i).map(|h| h.to_string());
        Some(match (parts[0], parts.len()) {
            ("limit", 2) => Key::Limit { tenant },
            ("alloc", 4) if parts[2] == "claim" => Key::Claim {
                tenant,
                host: host(3)?,
            },
            ("alloc", 4) if parts[2] == "spare" => Key::Spare {
                tenant,
                host: host(3)?,
            },
            ("used", 3) => Key::Used {
                tenant,
                host: host(2)?,
            },
            ("want", 3) => Key::Want {
                tenant,
                host: host(2)?,
            },
            _ => return None,
        })
    }
}

fn escape(tenant: &str) -> String {
    tenant.replace('%', "%25").replace('/', "%2F")
}

fn unescape(segment: &str) -> String {
    segment.replace("%2F", "/").replace("%25", "%")
}

/// A byte count as stored; anything unreadable counts as 0 (and is
/// rewritten by its owner on its next change).
pub fn bytes(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A limit as stored: bytes or "none"; `None` when unreadable.
pub fn limit(value: &[u8]) -> Option<Limit> {
    parse_size(std::str::from_utf8(value).ok()?).ok()
}

pub fn limit_value(limit: Limit) -> String {
    limit.map_or_else(|| "none".to_string(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back() {
        let k = Keys::new("/spoolfs/prod", "backend1");
        let t = "a/b%c.org";
        let (tenant, host) = (t.to_string(), "backend1".to_string());
        assert_eq!(
            k.parse(k.limit(t).as_bytes()),
            Some(Key::Limit {
                tenant: tenant.clone()
            })
        );
        assert_eq!(
            k.parse(k.claim(t).as_bytes()),
            Some(Key::Claim {
                tenant: tenant.clone(),
                host: host.clone()
            })
        );
        assert_eq!(
            k.parse(k.spare(t).as_bytes()),
            Some(Key::Spare {
                tenant: tenant.clone(),
                host: host.clone()
            })
        );
        assert_eq!(
            k.parse(k.used(t).as_bytes()),
            Some(Key::Used {
                tenant: tenant.clone(),
                host: host.clone()
            })
        );
        assert_eq!(
            k.parse(k.want(t).as_bytes()),
            Some(Key::Want { tenant, host })
        );
        assert_eq!(k.parse(b"/spoolfs/other/limit/x"), None);
        assert_eq!(k.parse(b"/spoolfs/prodx/limit/x"), None);
    }

    #[test]
    fn values_read_back() {
        assert_eq!(bytes(b"123"), 123);
        assert_eq!(bytes(b"junk"), 0);
        assert_eq!(limit(limit_value(Some(5)).as_bytes()), Some(Some(5)));
        assert_eq!(limit(limit_value(None).as_bytes()), Some(None));
    }
}
