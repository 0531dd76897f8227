//! The cluster agent: the one task that talks to etcd. It registers this
//! host's usage at start, keeps each limited tenant's holding where
//! `plan.rs` says (topping up before the host runs out, giving back when
//! idle or when another host starves), keeps the lease alive, publishes
//! usage, follows limit changes, and serves the control interface.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchStream};
use log::{info, warn};
use tokio::sync::mpsc;

use super::keys::{self, Key};
use super::plan::{Holding, Situation, plan};
use super::store::{Store, StoreError, StoreResult};
use super::{ClusterReport, Command};
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

    fn store(&self) -> &Store {
        self.store.as_ref().expect("connected before use")
    }

    // --- connection state -------------------------------------------------

    /// etcd did not answer: one log line when it goes.
    fn lost(&mut self, e: &StoreError) {
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
    fn back(&mut self) {
        if !self.online {
            info!("cluster: etcd reachable again; growth beyond this host's claims resumes");
        }
        self.online = true;
    }

    async fn connect(&mut self) -> StoreResult<()> {
        if self.store.is_none() {
            self.store = Some(Store::connect(&self.config, CALL_TIMEOUT).await?);
        }
        Ok(())
    }

    // --- registration -----------------------------------------------------

    /// Before any tenant may grow: learn the limits, take a lease, claim
    /// exactly what this host stores (rebuilt from disk by the scan) and
    /// forget what a previous life of it held.
    async fn register(&mut self) -> StoreResult<()> {
        self.connect().await?;
        self.store
            .as_mut()
            .expect("connected")
            .grant_lease()
            .await?;
        let now = Instant::now();
        let holdings = self.ledger.tenant_holdings();
        let (mine, _) = self
            .store()
            .range(self.store().keys.all_allocations())
            .await?;
        let stored: BTreeSet<&str> = holdings.iter().map(|h| h.tenant.as_str()).collect();
        let host = self.config.host_id.clone();
        let forgotten: BTreeSet<String> = mine
            .iter()
            .filter_map(|kv| match self.store().keys.parse(kv.key()) {
                Some(Key::Claim { tenant, host: h }) if h == host => Some(tenant),
                _ => None,
            })
            .filter(|tenant| !stored.contains(tenant.as_str()))
            .collect();
        for tenant in &forgotten {
            self.store().forget(tenant).await?;
        }
        self.refresh().await?;
        for holding in &holdings {
            self.seed(holding).await?;
            let claim = Holding {
                claim: holding.used,
                spare: 0,
            };
            let store = self.store();
            store.forget(&holding.tenant).await?;
            let snapshot = store.tenant(&holding.tenant).await?;
            // Stored bytes are claimed unconditionally: they are counted
            // whatever the limit now says.
            store
                .set_holding(
                    &holding.tenant,
                    Holding::default(),
                    claim,
                    snapshot.revision,
                )
                .await?;
            self.ledger.set_share(&holding.tenant, holding.used);
            let mut tenant = Tenant::new(now);
            tenant.held = claim;
            tenant.used = holding.used;
            self.tenants.insert(holding.tenant.clone(), tenant);
        }
        self.publish().await;
        Ok(())
    }

    /// Reads the limits and starving hosts anew and restarts the watch
    /// (at start, and after etcd was lost: events may have been missed).
    async fn refresh(&mut self) -> StoreResult<()> {
        let (limits, revision) = self.store().limits().await?;
        self.ledger.set_cluster_limits(limits.clone());
        self.limits = limits;
        let prefix = format!("{}/want/", self.config.prefix);
        let (wants, _) = self.store().range(prefix).await?;
        for tenant in self.tenants.values_mut() {
            tenant.starving_hosts.clear();
        }
        for kv in &wants {
            if let Some(Key::Want { tenant, host }) = self.store().keys.parse(kv.key())
                && host != self.config.host_id
            {
                let now = Instant::now();
                let t = self
                    .tenants
                    .entry(tenant)
                    .or_insert_with(|| Tenant::new(now));
                t.starving_hosts.insert(host);
            }
        }
        self.watch = Some(self.store().watch(revision + 1).await?);
        self.stale = false;
        self.back();
        Ok(())
    }

    /// Writes a tenant's configured limit to etcd if etcd has none.
    async fn seed(&mut self, holding: &TenantHolding) -> StoreResult<()> {
        if self.limits.contains_key(&holding.tenant) {
            return Ok(());
        }
        let Some(limit) = self.ledger.local_tenant_limit(&holding.tenant) else {
            return Ok(());
        };
        self.store()
            .seed_limit(&holding.tenant, Some(limit))
            .await?;
        let snapshot = self.store().tenant(&holding.tenant).await?;
        if let Some(limit) = snapshot.limit {
            self.limits.insert(holding.tenant.clone(), limit);
            self.ledger.set_cluster_limit(&holding.tenant, Some(limit));
        }
        Ok(())
    }

    // --- the steady state -------------------------------------------------

    async fn tick(&mut self) {
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
        let situation = |t: &Tenant| Situation {
            used: t.used,
            needed: t.needed,
            held: t.held,
            limit: holding.limit,
            others: t.others,
            idle: now.duration_since(t.last_growth) >= idle_after,
            others_starving: !t.starving_hosts.is_empty(),
        };
        let first = plan(&situation(t), self.config.grant);
        if first.target == t.held && !first.starving && !t.wanting {
            return Ok(());
        }
        for _ in 0..RACE_RETRIES {
            let snapshot = self.store().tenant(&holding.tenant).await?;
            let t = self.tenants.get_mut(&holding.tenant).expect("inserted");
            t.held = snapshot.mine;
            t.others = snapshot.others;
            let planned = plan(&situation(t), self.config.grant);
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
            if holding.limit.is_some() {
                self.ledger.set_share(&holding.tenant, target.claim);
            }
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
            Ok(false) | Err(StoreError::LeaseLost) => {
                warn!(
                    "cluster: this host's lease expired; its spare headroom went back to the pool"
                );
                if let Err(e) = self.store.as_mut().expect("connected").grant_lease().await {
                    self.lost(&e);
                    return;
                }
                for tenant in self.tenants.values_mut() {
                    tenant.held.spare = 0;
                    tenant.wanting = false;
                }
                self.stale = true;
            }
            Err(e) => self.lost(&e),
        }
    }

    /// Publishes what this host stores of each tenant, where it changed.
    async fn publish(&mut self) {
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

    async fn on_watch(&mut self, event: StoreResult<Option<etcd_client::WatchResponse>>) {
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

    async fn maintain_now(&mut self, tenants: BTreeSet<String>) {
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

    // --- commands -----------------------------------------------------------

    async fn command(&mut self, command: Command) {
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

/// The next watch response, or never when there is no watch.
async fn next_event(
    watch: &mut Option<WatchStream>,
) -> StoreResult<Option<etcd_client::WatchResponse>> {
    match watch {
        Some(stream) => stream.message().await.map_err(StoreError::from),
        None => std::future::pending().await,
    }
}
