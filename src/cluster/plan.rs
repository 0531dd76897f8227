//! The escrow arithmetic, pure: given what this host stores and holds of a
//! tenant's limit and what every other host holds, how much it should hold.
//!
//! A host's holding has two parts. The *claim* is not tied to a lease: it
//! always covers the bytes stored here (so they stay counted if the host
//! dies) plus a small margin, and it is what the local ledger lets the
//! tenant grow into. The *spare* is tied to the host's lease: headroom
//! taken from the pool in `grant` chunks, turned into claim without
//! contention as the claim runs low, and gone within the lease's TTL if the
//! host dies. Σ over hosts of (claim, or published usage if larger) +
//! spare never exceeds the tenant's limit.

use crate::config::Limit;

/// This host's holding of one tenant's limit, as recorded in etcd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub claim: u64,
    pub spare: u64,
}

impl Holding {
    pub fn total(&self) -> u64 {
        self.claim.saturating_add(self.spare)
    }
}

/// Everything the plan depends on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Situation {
    /// Bytes this host stores for the tenant (with those being reserved).
    pub used: u64,
    /// Bytes a waiting write needs this host to hold in total (0: none).
    pub needed: u64,
    pub held: Holding,
    pub limit: Limit,
    /// What every other host holds: Σ max(claim, used) + spare.
    pub others: u64,
    /// No growth here for a while: spare goes back to the pool.
    pub idle: bool,
    /// Another host is short: give back all but what is stored.
    pub others_starving: bool,
}

/// The outcome: the holding to have, and whether a waiting write still
/// cannot be served with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub target: Holding,
    pub starving: bool,
}

/// How far ahead of usage the claim is kept: the part of a grant a
/// dead host strands until it restarts, so a quarter of one.
pub fn margin(grant: u64) -> u64 {
    (grant / 4).max(1)
}

pub fn plan(s: &Situation, grant: u64) -> Plan {
    let Some(limit) = s.limit else {
        // Nothing to escrow; the published usage keeps the data counted
        // should a limit be set later.
        return Plan {
            target: Holding::default(),
            starving: false,
        };
    };
    let margin = margin(grant);
    let need = s.used.max(s.needed);
    let mut claim = s.held.claim;
    if claim < need || claim - need < margin / 2 {
        claim = need.saturating_add(margin);
    } else if claim - need > margin.saturating_mul(2) {
        claim = need + margin;
    }
    if s.others_starving {
        claim = need;
    }
    // The holding's total is kept; what the claim took or gave back moves
    // to or from the spare.
    let mut spare = s.held.total().saturating_sub(claim);
    if s.others_starving || s.idle {
        spare = 0;
    } else if spare < grant / 4 || spare > grant {
        // Topped up once three quarters of a grant are drawn; never more
        // than one grant idle here.
        spare = grant;
    }
    let room = limit.saturating_sub(s.others);
    if claim.saturating_add(spare) > room {
        // The limit binds: stored bytes stay claimed whatever it is (a
        // lowered limit refuses growth, it deletes nothing).
        claim = s.used.max(claim.min(room));
        spare = room.saturating_sub(claim);
    }
    Plan {
        target: Holding { claim, spare },
        starving: claim < need,
    }
}

/// What the others hold, from each host's (claim, spare, published used).
pub fn others_total<'a>(hosts: impl IntoIterator<Item = &'a (u64, u64, u64)>) -> u64 {
    hosts
        .into_iter()
        .map(|&(claim, spare, used)| claim.max(used).saturating_add(spare))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 64;

    fn at(used: u64, claim: u64, spare: u64, limit: u64, others: u64) -> Situation {
        Situation {
            used,
            held: Holding { claim, spare },
            limit: Some(limit),
            others,
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_host_takes_a_margin_and_a_grant() {
        let p = plan(&at(0, 0, 0, 1000, 0), G);
        assert_eq!(
            p.target,
            Holding {
                claim: 16,
                spare: G
            }
        );
        assert!(!p.starving);
    }

    #[test]
    fn nothing_changes_while_the_claim_is_ahead_and_spare_is_left() {
        let s = at(10, 26, 40, 1000, 0);
        assert_eq!(plan(&s, G).target, s.held);
    }

    #[test]
    fn a_low_claim_is_raised_from_the_spare_without_growing_the_total() {
        // 20 of 26 claimed are used: less than half a margin (8) is left.
        let p = plan(&at(20, 26, 40, 1000, 0), G);
        assert_eq!(
            p.target,
            Holding {
                claim: 36,
                spare: 30
            }
        );
    }

    #[test]
    fn spare_is_topped_up_to_a_grant_once_three_quarters_are_drawn() {
        let p = plan(&at(20, 26, 10, 1000, 0), G);
        assert_eq!(
            p.target,
            Holding {
                claim: 36,
                spare: G
            }
        );
    }

    #[test]
    fn the_total_never_exceeds_what_the_others_leave() {
        let p = plan(&at(20, 26, 10, 100, 50), G);
        assert_eq!(p.target.total(), 50);
        assert_eq!(p.target.claim, 36);
        assert!(!p.starving);
    }

    #[test]
    fn a_waiting_write_beyond_the_room_left_starves() {
        let mut s = at(40, 45, 5, 100, 50);
        s.needed = 60;
        let p = plan(&s, G);
        assert_eq!(
            p.target,
            Holding {
                claim: 50,
                spare: 0
            }
        );
        assert!(p.starving);
    }

    #[test]
    fn stored_bytes_stay_claimed_when_the_limit_is_lowered_below_them() {
        let p = plan(&at(80, 90, 30, 50, 0), G);
        assert_eq!(
            p.target,
            Holding {
                claim: 80,
                spare: 0
            }
        );
    }

    #[test]
    fn a_starving_neighbour_gets_everything_not_stored() {
        let mut s = at(20, 36, 50, 1000, 0);
        s.others_starving = true;
        assert_eq!(
            plan(&s, G).target,
            Holding {
                claim: 20,
                spare: 0
            }
        );
    }

    #[test]
    fn an_idle_host_returns_its_spare_but_keeps_its_margin() {
        let mut s = at(20, 36, 50, 1000, 0);
        s.idle = true;
        assert_eq!(
            plan(&s, G).target,
            Holding {
                claim: 36,
                spare: 0
            }
        );
    }

    #[test]
    fn a_claim_far_ahead_after_deletes_comes_down() {
        let p = plan(&at(10, 100, 64, 1000, 0), G);
        assert_eq!(p.target.claim, 26);
        assert_eq!(p.target.spare, G);
    }

    #[test]
    fn unlimited_tenants_hold_nothing() {
        let mut s = at(10, 20, 30, 0, 0);
        s.limit = None;
        assert_eq!(plan(&s, G).target, Holding::default());
    }

    #[test]
    fn others_count_their_published_usage_when_it_exceeds_their_claim() {
        assert_eq!(others_total(&[(10, 5, 0), (3, 0, 20)]), 15 + 20);
    }

    #[test]
    fn all_hosts_planning_in_turn_never_exceed_the_limit_and_fill_it() {
        // Three hosts drawing in turn; each plan sees the others' totals.
        let limit = 1000;
        let mut held = [Holding::default(); 3];
        let mut used = [0u64; 3];
        for round in 0..200 {
            let h = round % 3;
            let others: u64 = (0..3).filter(|&o| o != h).map(|o| held[o].total()).sum();
            let s = Situation {
                used: used[h],
                needed: used[h] + 7,
                held: held[h],
                limit: Some(limit),
                others,
                idle: false,
                others_starving: false,
            };
            held[h] = plan(&s, G).target;
            if used[h] + 7 <= held[h].claim {
                used[h] += 7;
            }
            let total: u64 = held.iter().map(Holding::total).sum();
            assert!(total <= limit, "round {round}: {total}");
        }
        assert!(used.iter().sum::<u64>() > 0);
    }
}
