//! `spoolfs usage --cluster`: every tenant's limit and usage across the
//! cluster, and what each host stores and holds of it, read from etcd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::{self, Key, Keys};
use crate::quota::human_size;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ClusterReport {
    pub tenants: Vec<ClusterTenant>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterTenant {
    pub name: String,
    /// `null`: no limit.
    pub limit: Option<u64>,
    /// Σ of the hosts' used.
    pub used: u64,
    pub hosts: Vec<ClusterHost>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClusterHost {
    pub host: String,
    pub used: u64,
    /// Claim plus spare: the part of the limit this host holds.
    pub allocated: u64,
}

impl ClusterReport {
    /// Builds the report from every key under the prefix.
    pub fn from_kvs<'a>(keys: &Keys, kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut limits: BTreeMap<String, Option<u64>> = BTreeMap::new();
        let mut hosts: BTreeMap<String, BTreeMap<String, ClusterHost>> = BTreeMap::new();
        for (key, value) in kvs {
            let n = keys::bytes(value);
            match keys.parse(key) {
                Some(Key::Limit { tenant }) => {
                    limits.insert(tenant, keys::limit(value).flatten());
                }
                Some(Key::Claim { tenant, host } | Key::Spare { tenant, host }) => {
                    add(&mut hosts, tenant, host, |h| h.allocated += n)
                }
                Some(Key::Used { tenant, host }) => add(&mut hosts, tenant, host, |h| h.used += n),
                _ => {}
            }
        }
        let names: Vec<String> = limits.keys().chain(hosts.keys()).cloned().collect();
        let mut tenants: Vec<ClusterTenant> = Vec::new();
        for name in names {
            if tenants.iter().any(|t| t.name == name) {
                continue;
            }
            let hosts: Vec<ClusterHost> = hosts
                .get(&name)
                .map(|h| h.values().cloned().collect())
                .unwrap_or_default();
            tenants.push(ClusterTenant {
                limit: limits.get(&name).copied().flatten(),
                used: hosts.iter().map(|h| h.used).sum(),
                hosts,
                name,
            });
        }
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterReport { tenants }
    }

    /// For people: one line per tenant, then one per host holding it.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>12} {:>12} {:>12}\n",
            "TENANT / HOST", "USED", "ALLOCATED", "LIMIT"
        );
        for t in &self.tenants {
            let limit = t.limit.map_or_else(|| "none".to_string(), human_size);
            let allocated: u64 = t.hosts.iter().map(|h| h.allocated).sum();
            out += &format!(
                "{:<24} {:>12} {:>12} {:>12}\n",
                t.name,
                human_size(t.used),
                human_size(allocated),
                limit
            );
            for h in &t.hosts {
                out += &format!(
                    "  {:<22} {:>12} {:>12}\n",
                    h.host,
                    human_size(h.used),
                    human_size(h.allocated)
                );
            }
        }
        out
    }
}

fn add(
    hosts: &mut BTreeMap<String, BTreeMap<String, ClusterHost>>,
    tenant: String,
    host: String,
    change: impl FnOnce(&mut ClusterHost),
) {
    let entry = hosts.entry(tenant).or_default().entry(host.clone());
    change(entry.or_insert(ClusterHost {
        host,
        used: 0,
        allocated: 0,
    }));
}
