//! The cluster agent: the one task that talks to etcd. It registers this
//! host's usage at start, keeps each limited tenant's holding where
//! `plan.rs` says (topping up before the host runs out, giving back when
//! idle or when another host starves), keeps the lease alive, publishes
//! usage, follows limit changes, and serves the control interface.
//! Here: the loop and the steady state; `registration.rs`: start-up and
//! catching up after etcd was lost; `events.rs`: watch events and commands.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use etcd_client::WatchStream;
use log::{info, warn};
use tokio::sync::mpsc;

use super::Command;
use super::plan::{Holding, Situation, plan};
use super::store::{Store, StoreError, StoreResult};
use crate::config::{ClusterConfig, Limit};
use crate::quota::{Ledger, TenantHolding};

/// How often holdings are looked at (a demand is served at once).
const TICK: Duration = Duration::from_millis(200);
/// How often usage is published.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one etcd call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a transaction that lost a race with another host's.
const RACE_RETRIES: usize = 8;

mod events;
mod registration;

/// What the agent knows of one tenant on this host.
struct Tenant {
    held: Holding,
    /// The others' holdings at the last read.
    others: u64,
    used: u64,
    published: Option<u64>,
    last_growth: Instant,
    /// Bytes a waiting write needs held, and since when it asks.
    needed: u64,
    needed_since: Instant,
    /// Hosts that said they are starved for this tenant.
    starving_hosts: BTreeSet<String>,
    /// Whether this host has said it is starved.
    wanting: bool,
    /// The limit changed since this host last read the others' holdings:
    /// the next plan must not trust `others` (a lowered limit could leave
    /// this host's claim where the others' new ones no longer leave room).
    limit_changed: bool,
}

impl Tenant {
    fn new(now: Instant) -> Tenant {
        Tenant {
            held: Holding::default(),
            others: 0,
            used: 0,
            published: None,
            last_growth: now,
            needed: 0,
            needed_since: now,
            limit_changed: false,
            starving_hosts: BTreeSet::new(),
            wanting: false,
        }
    }
}

pub(super) struct Agent {
    ledger: Arc<Ledger>,
    config: ClusterConfig,
    store: Option<Store>,
    tenants: HashMap<String, Tenant>,
    /// Limits etcd has, as last seen.
    limits: BTreeMap<String, Limit>,
    watch: Option<WatchStream>,
    /// Whether etcd answered the last call (for one log line per change).
    online: bool,
    /// Set when etcd was lost: limits and starving hosts are read anew,
    /// and the watch restarted, once it is back.
    stale: bool,
    /// A call found this host's lease gone: a new one is taken next tick.
    lease_lost: bool,
}

impl Agent {
    pub(super) fn new(ledger: Arc<Ledger>, config: ClusterConfig) -> Agent {
        Agent {
            ledger,
            config,
            store: None,
            tenants: HashMap::new(),
            limits: BTreeMap::new(),
            watch: None,
            online: true,
            stale: true,
            lease_lost: false,
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Command>,
        registered: std_mpsc::Sender<()>,
    ) {
        while let Err(e) = self.register().await {
            self.lost(&e);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.ledger.shares_registered();
        info!(
            "cluster: registered as {:?} under {:?} ({} tenants)",
            self.config.host_id,
            self.config.prefix,
            self.tenants.len()
        );
        let _ = registered.send(());
        let mut tick = tokio::time::interval(TICK);
        let mut keep_alive =
            tokio::time::interval(Duration::from_secs(self.config.lease_ttl_secs).div_f64(3.0));
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        for timer in [&mut tick, &mut keep_alive, &mut publish] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
                _ = tick.tick() => self.tick().await,
                _ = keep_alive.tick() => self.keep_alive().await,
                _ = publish.tick() => self.publish().await,
                event = next_event(&mut self.watch) => self.on_watch(event).await,
            }
        }
    }

    pub(super) fn store(&self) -> &Store {
        self.store.as_ref().expect("connected before use")
    }

    // --- connection state -------------------------------------------------

    /// etcd did not answer: one log line when it goes.
    pub(super) fn lost(&mut self, e: &StoreError) {
        if let StoreError::LeaseLost = e {
            // etcd did answer: only the lease is gone (renewed next tick).
            self.lease_lost = true;
            return;
        }
        if self.online {
            warn!(
                "cluster: etcd unreachable ({e}); serving within this host's claims, growth beyond them refused until it is back"
            );
        }
        self.online = false;
        self.stale = true;
        self.watch = None;
    }

    /// etcd answered again: one log line when it comes back.
    pub(super) fn back(&mut self) {
        if !self.online {
            info!("cluster: etcd reachable again; growth beyond this host's claims resumes");
        }
        self.online = true;
    }

    pub(super) async fn connect(&mut self) -> StoreResult<()> {
        if self.store.is_none() {
            self.store = Some(Store::connect(&self.config, CALL_TIMEOUT).await?);
        }
        Ok(())
    }

    // --- the steady state -------------------------------------------------

    async fn tick(&mut self) {
        if self.lease_lost {
            self.renew_lease().await;
        }
        if self.stale {
            let refreshed = async {
                self.connect().await?;
                self.refresh().await
            }
            .await;
            if let Err(e) = refreshed {
                self.lost(&e);
                return;
            }
        }
        for holding in self.ledger.tenant_holdings() {
            if let Err(e) = self.maintain(&holding).await {
                self.lost(&e);
                return;
            }
        }
    }

    /// Brings one tenant's holding to what the plan says, if it differs.
    async fn maintain(&mut self, holding: &TenantHolding) -> StoreResult<()> {
        if holding.limit.is_some() {
            self.seed(holding).await?;
        }
        let (now, wait) = (Instant::now(), self.config.wait);
        let idle_after = Duration::from_secs(self.config.idle_return_secs);
        let t = self
            .tenants
            .entry(holding.tenant.clone())
            .or_insert_with(|| Tenant::new(now));
        if holding.used > t.used {
            t.last_growth = now;
        }
        t.used = holding.used;
        // A write waits `wait` at most: after that nobody needs the bytes.
        if now.duration_since(t.needed_since) > wait + TICK {
            t.needed = 0;
        }
        let situation = |t: &Tenant, limit: Option<Limit>| Situation {
            used: t.used,
            needed: t.needed,
            held: t.held,
            limit: limit.unwrap_or(holding.limit),
            others: t.others,
            idle: now.duration_since(t.last_growth) >= idle_after,
            others_starving: !t.starving_hosts.is_empty(),
        };
        let first = plan(&situation(t, None), self.config.grant);
        if first.target == t.held && !first.starving && !t.wanting && !t.limit_changed {
            return Ok(());
        }
        for _ in 0..RACE_RETRIES {
            let snapshot = self.store().tenant(&holding.tenant).await?;
            let t = self.tenants.get_mut(&holding.tenant).expect("inserted");
            t.held = snapshot.mine;
            t.others = snapshot.others;
            // The limit read with the allocations, not the one last seen
            // here: the transaction only checks that it has not changed
            // since that read.
            let planned = plan(&situation(t, snapshot.limit), self.config.grant);
            let mut target = planned.target;
            if target.claim < t.held.claim {
                // Shrink here before giving back there; never below what
                // is stored (a write may have landed since the plan).
                let claim = self.ledger.set_share(&holding.tenant, target.claim);
                target.spare = target.spare.saturating_sub(claim - target.claim);
                target.claim = claim;
            }
            let current = t.held;
            let done = target == current
                || self
                    .store()
                    .set_holding(&holding.tenant, current, target, snapshot.revision)
                    .await?;
            if !done {
                continue;
            }
            let t = self.tenants.get_mut(&holding.tenant).expect("inserted");
            t.held = target;
            t.limit_changed = false;
            self.ledger.set_share(&holding.tenant, target.claim);
            return self.say_starving(&holding.tenant, planned.starving).await;
        }
        Ok(())
    }

    /// Tells the others (through a leased key they watch) whether this host
    /// is starved for a tenant, when that changed.
    async fn say_starving(&mut self, tenant: &str, starving: bool) -> StoreResult<()> {
        let t = self.tenants.get_mut(tenant).expect("known");
        if t.wanting == starving {
            return Ok(());
        }
        let needed = t.needed;
        self.store()
            .want(tenant, starving.then_some(needed))
            .await?;
        self.tenants.get_mut(tenant).expect("known").wanting = starving;
        Ok(())
    }

    async fn keep_alive(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.keep_alive().await {
            Ok(true) => self.back(),
            Ok(false) | Err(StoreError::LeaseLost) => self.renew_lease().await,
            Err(e) => self.lost(&e),
        }
    }

    /// The lease expired (etcd was out of reach longer than its TTL, or
    /// this host stalled): the spare on it is gone; take a new one.
    async fn renew_lease(&mut self) {
        warn!("cluster: this host's lease expired; its spare headroom went back to the pool");
        if let Err(e) = self.store.as_mut().expect("connected").grant_lease().await {
            self.lost(&e);
            return;
        }
        for tenant in self.tenants.values_mut() {
            tenant.held.spare = 0;
            tenant.wanting = false;
        }
        self.lease_lost = false;
        self.stale = true;
    }

    /// Publishes what this host stores of each tenant, where it changed.
    pub(super) async fn publish(&mut self) {
        if !self.online || self.store.is_none() {
            return;
        }
        let changed: Vec<(String, u64)> = self
            .ledger
            .tenant_holdings()
            .into_iter()
            .filter(|h| {
                let known = self.tenants.get(&h.tenant);
                known.is_none_or(|t| t.published != Some(h.used))
            })
            .map(|h| (h.tenant, h.used))
            .collect();
        if changed.is_empty() {
            return;
        }
        for batch in changed.chunks(64) {
            if let Err(e) = self.store().publish_used(batch).await {
                self.lost(&e);
                return;
            }
        }
        let now = Instant::now();
        for (tenant, used) in changed {
            let t = self
                .tenants
                .entry(tenant)
                .or_insert_with(|| Tenant::new(now));
            t.published = Some(used);
        }
    }

    pub(super) async fn maintain_now(&mut self, tenants: BTreeSet<String>) {
        if tenants.is_empty() {
            return;
        }
        for holding in self.ledger.tenant_holdings() {
            if tenants.contains(&holding.tenant)
                && let Err(e) = self.maintain(&holding).await
            {
                self.lost(&e);
                return;
            }
        }
    }
}

/// The next watch response, or never when there is no watch.
async fn next_event(
    watch: &mut Option<WatchStream>,
) -> StoreResult<Option<etcd_client::WatchResponse>> {
    match watch {
        Some(stream) => stream.message().await.map_err(StoreError::from),
        None => std::future::pending().await,
    }
}
