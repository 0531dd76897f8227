//! What comes to the agent from outside: etcd's watch events (limits set
//! on any host, hosts starved or giving back) and the daemon's commands
//! (a write short of share, the control interface, the unmount).

use std::collections::BTreeSet;
use std::time::Instant;

use etcd_client::EventType;

use super::{Agent, TICK, Tenant};
use crate::cluster::keys::{self, Key};
use crate::cluster::store::StoreResult;
use crate::cluster::{ClusterReport, Command};
use crate::config::Limit;

impl Agent {
    pub(super) async fn on_watch(
        &mut self,
        event: StoreResult<Option<etcd_client::WatchResponse>>,
    ) {
        let Ok(Some(response)) = event else {
            // The member it was on went away: the next tick watches anew
            // (through another member, if need be) and re-reads what the
            // events would have said. Whether etcd is lost is for a call
            // to tell, having tried every member.
            self.stale = true;
            self.watch = None;
            return;
        };
        let mut wake = BTreeSet::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let put = event.event_type() == EventType::Put;
            match self.store().keys.parse(kv.key()) {
                Some(Key::Limit { tenant }) => {
                    let limit = if put { keys::limit(kv.value()) } else { None };
                    match limit {
                        Some(l) => self.limits.insert(tenant.clone(), l),
                        None => self.limits.remove(&tenant),
                    };
                    self.ledger.set_cluster_limit(&tenant, limit);
                    let now = Instant::now();
                    self.tenants
                        .entry(tenant.clone())
                        .or_insert_with(|| Tenant::new(now))
                        .limit_changed = true;
                    wake.insert(tenant);
                }
                Some(Key::Want { tenant, host }) if host != self.config.host_id => {
                    let now = Instant::now();
                    let t = self
                        .tenants
                        .entry(tenant.clone())
                        .or_insert_with(|| Tenant::new(now));
                    if put {
                        t.starving_hosts.insert(host);
                    } else {
                        t.starving_hosts.remove(&host);
                    }
                    wake.insert(tenant);
                }
                // Someone gave back: a starved host here may now get it.
                Some(Key::Claim { tenant, .. } | Key::Spare { tenant, .. })
                    if self.tenants.get(&tenant).is_some_and(|t| t.wanting) =>
                {
                    wake.insert(tenant);
                }
                _ => {}
            }
        }
        self.maintain_now(wake).await;
    }

    pub(super) async fn command(&mut self, command: Command) {
        match command {
            Command::Want { tenant, bytes } => {
                let now = Instant::now();
                let t = self
                    .tenants
                    .entry(tenant.clone())
                    .or_insert_with(|| Tenant::new(now));
                if bytes > t.needed || now.duration_since(t.needed_since) > TICK {
                    t.needed = bytes;
                    t.needed_since = now;
                }
                if self.online && !self.stale {
                    self.maintain_now(BTreeSet::from([tenant])).await;
                }
            }
            Command::SetLimit {
                tenant,
                limit,
                reply,
            } => {
                let result = self.set_limit(&tenant, limit).await;
                let _ = reply.send(result.map_err(|e| format!("etcd: {e}")));
            }
            Command::Stop { reply } => {
                self.publish().await;
                let revoked = match &self.store {
                    Some(store) if self.online => store.revoke_lease().await,
                    _ => Ok(()),
                };
                let _ = reply.send(revoked.map_err(|e| format!("etcd: {e}")));
            }
            Command::Report { reply } => {
                let result = self.report().await;
                let _ = reply.send(result.map_err(|e| format!("etcd: {e}")));
            }
        }
    }

    async fn set_limit(&mut self, tenant: &str, limit: Option<Limit>) -> StoreResult<()> {
        self.connect().await?;
        let written = self.store().write_limit(tenant, limit).await;
        if let Err(e) = written {
            self.lost(&e);
            return Err(e);
        }
        match limit {
            Some(l) => self.limits.insert(tenant.to_string(), l),
            None => self.limits.remove(tenant),
        };
        self.ledger.set_cluster_limit(tenant, limit);
        Ok(())
    }

    async fn report(&mut self) -> StoreResult<ClusterReport> {
        self.connect().await?;
        let (kvs, _) = self.store().range(self.store().keys.all()).await?;
        let pairs = kvs.iter().map(|kv| (kv.key(), kv.value()));
        Ok(ClusterReport::from_kvs(&self.store().keys, pairs))
    }
}
