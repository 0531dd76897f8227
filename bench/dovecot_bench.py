#!/usr/bin/env python3
"""Dovecot workloads, native directory vs spoolfs in one run (issue 14):

  dovecot-deliver  LMTP delivery, one connection, messages to 5 users in 3
                   domains (a quarter to several recipients): messages/s
  dovecot-fetch    IMAP `UID FETCH 1:* BODY.PEEK[]` of every message of every
                   user; cold (after drop_caches) and warm (right after):
                   messages/s

Each target is a private Dovecot (the e2e test's set-up: tests/dovecot/
dovecot_e2e.py) on its own spool: `native` a plain directory, and one per
`--spoolfs NAME=BIN` a spoolfs mount (pattern layout, quotas on with a
tenant and a mailbox limit never hit).  Rounds alternate the targets; the
report gives medians, min-max and the ratio to native. `--local-index`
gives every target the faster layout of the README's Dovecot how-to:
Dovecot's INDEX and CONTROL files on the local filesystem, beside the
spool instead of in it.

  python3 bench/dovecot_bench.py [--format maildir|mdbox] [--rounds 5]
      [--messages 400] [--spoolfs NAME=BIN[,OPTS] ...] [--local-index] [--json]

Needs root (mounts, drop_caches).  Standard library only.
"""

import argparse
import atexit
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "dovecot"))
import dovecot_e2e as e2e  # noqa: E402

sys.path.insert(0, HERE)
import scratch_fs  # noqa: E402


class Site:
    """One target: a spool (native or spoolfs) with its own Dovecot."""

    def __init__(self, name, args, spoolfs_bin=None, options=None):
        self.name = name
        self.env = e2e.Env()
        self.spoolfs_bin = spoolfs_bin
        ns = argparse.Namespace(
            format=args.format, backend="spoolfs" if spoolfs_bin else "native",
            spoolfs_bin=spoolfs_bin, messages=0, seed=args.seed,
            tenant_limit="100G", mailbox_limit="50G", strict_link_once=False,
            keep=False, local_index=args.local_index)
        self.h = e2e.Harness(ns)
        if options:
            self.h.mount_options = ["-o", options]

    def start(self):
        # the e2e harness keeps its processes in the module's ENV: give each
        # site its own, swapping it in while the site is driven
        with self:
            self.h.setup()
            self.h.drop_connections()

    def __enter__(self):
        self.saved, e2e.ENV = e2e.ENV, self.env
        return self

    def __exit__(self, *exc):
        e2e.ENV = self.saved

    def requests(self):
        """The daemon's request counters by opcode (spoolfs only)."""
        if not self.spoolfs_bin:
            return None
        r = subprocess.run([self.spoolfs_bin, "usage", "--requests", "--json",
                            self.h.spool], capture_output=True, text=True)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout).get("requests")

    def stop(self):
        with self:
            try:
                self.h.drop_connections()
            finally:
                self.env.cleanup()


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def deliver_batch(site, batch, rng_seed):
    """Deliver `batch` messages over one LMTP connection; messages/s."""
    h = site.h
    import random
    rng = random.Random(rng_seed)
    msgs = []
    for _ in range(batch):
        if rng.random() < 0.25:
            rcpts = rng.sample(e2e.USERS, rng.randint(2, 3))
        else:
            rcpts = [rng.choice(e2e.USERS)]
        size = rng.choice([rng.randint(300, 4000)] * 6 + [rng.randint(4000, 60_000)] * 4)
        msgs.append((rcpts, h.corpus.make(rcpts, size)[1]))
    lmtp = e2e.LMTP("127.0.0.1", h.lmtp_port)
    t = time.perf_counter()
    for rcpts, data in msgs:
        res = lmtp.send(e2e.SENDER, rcpts, data)
        bad = {r: v for r, v in res.items() if v[0] != 250}
        e2e.check(not bad, f"{site.name}: delivery refused: {bad}")
    elapsed = time.perf_counter() - t
    lmtp.close()
    return batch / elapsed


def fetch_all(site):
    """Fetch every message of every user (INBOX, where LMTP delivers);
    returns (messages, seconds)."""
    h = site.h
    n = 0
    t = time.perf_counter()
    for user in e2e.USERS:
        c = e2e.Imap(h.imap_port, user)
        c.select("INBOX", readonly=True)
        typ, data = c.c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        c.ok(typ, data, "FETCH")
        n += sum(1 for d in data if isinstance(d, tuple))
        c.logout()
    return n, time.perf_counter() - t


def per_message(before, after, messages):
    """Requests per message by opcode between two counter readings."""
    if before is None or after is None or not messages:
        return None
    delta = {op: (n - before.get(op, 0)) / messages for op, n in after.items()}
    return {op: v for op, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}


def summarize(samples, targets):
    rows = []
    for metric, unit in (("dovecot-deliver", "msgs/s"),
                         ("dovecot-fetch-cold", "msgs/s"),
                         ("dovecot-fetch-warm", "msgs/s")):
        native = statistics.median(samples[("native", metric)])
        for t in targets:
            v = samples[(t, metric)]
            rows.append({"workload": metric, "metric": unit, "target": t,
                         "median": statistics.median(v), "min": min(v),
                         "max": max(v), "runs": len(v),
                         "ratio": statistics.median(v) / native})
    return rows


def run_rounds(args, sites, targets, stop_all):
    """Deliveries, then cold and warm fetches, every target once per
    round in alternating order; medians are taken by the caller."""
    samples = {}
    counted = {}  # (target, phase) -> requests per message, last round
    try:
        for s in sites:
            s.start()
            with s:
                # folders exist, mailboxes exist: a warm-up delivery
                deliver_batch(s, 20, 0)
        # delivery rounds first, so that every fetch round reads the same
        # messages
        for r in range(args.rounds):
            order = sites if r % 2 == 0 else sites[::-1]
            for s in order:
                with s:
                    before = s.requests()
                    rate = deliver_batch(s, args.messages, 1000 + r)
                    counted[(s.name, "deliver")] = per_message(
                        before, s.requests(), args.messages)
                samples.setdefault((s.name, "dovecot-deliver"), []).append(rate)
            e2e.log(f"deliver round {r + 1}/{args.rounds}: " + ", ".join(
                f"{t} {samples[(t, 'dovecot-deliver')][-1]:.0f} msgs/s"
                for t in targets))
        for r in range(args.rounds):
            order = sites if r % 2 == 0 else sites[::-1]
            for s in order:
                with s:
                    drop_caches()
                    before = s.requests()
                    n, sec = fetch_all(s)
                    samples.setdefault((s.name, "dovecot-fetch-cold"), []).append(n / sec)
                    middle = s.requests()
                    n, sec = fetch_all(s)
                    samples.setdefault((s.name, "dovecot-fetch-warm"), []).append(n / sec)
                    counted[(s.name, "fetch cold")] = per_message(before, middle, n)
                    counted[(s.name, "fetch warm")] = per_message(middle, s.requests(), n)
            e2e.log(f"fetch round {r + 1}/{args.rounds}: " + ", ".join(
                f"{t} cold {samples[(t, 'dovecot-fetch-cold')][-1]:.0f} "
                f"warm {samples[(t, 'dovecot-fetch-warm')][-1]:.0f} msgs/s"
                for t in targets) + f" ({n} messages per target)")
    finally:
        stop_all()
    return samples, counted


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--format", choices=["maildir", "mdbox"], default="maildir")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--messages", type=int, default=400,
                    help="messages delivered per target per round")
    ap.add_argument("--spoolfs", action="append", default=[],
                    metavar="NAME=BIN[,OPTS]", help="a spoolfs target (repeatable), "
                    "OPTS its -o mount options; default "
                    "spoolfs=target/release/spoolfs")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--local-index", action="store_true",
                    help="every target keeps Dovecot's INDEX and CONTROL "
                    "outside its spool, on the local filesystem")
    ap.add_argument("--json", action="store_true")
    scratch_fs.add_argument(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("dovecot_bench.py must run as root", file=sys.stderr)
        return 2
    spoolfs = args.spoolfs or [f"spoolfs={REPO}/target/release/spoolfs"]
    sites = [Site("native", args)]
    for spec in spoolfs:
        name, _, binary = spec.partition("=")
        binary, _, options = binary.partition(",")
        sites.append(Site(name, args, os.path.abspath(binary), options))
    targets = [s.name for s in sites]

    def stop_all():
        for s in sites:
            s.stop()
    atexit.register(stop_all)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, e2e.on_signal)

    e2e.ensure_packages()
    with scratch_fs.scratch_filesystem(args.fs, args.fs_size, e2e.log):
        samples, counted = run_rounds(args, sites, targets, stop_all)
    rows = summarize(samples, targets)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"\nDovecot {args.format}, {args.rounds} alternating rounds, "
          f"medians (min-max), ratio to native")
    print(f"{'workload':<20} {'metric':<7} {'target':<10} {'median':>9} "
          f"{'min-max':>15} {'ratio':>6}")
    for row in rows:
        print(f"{row['workload']:<20} {row['metric']:<7} {row['target']:<10} "
              f"{row['median']:>9,.0f} "
              f"{row['min']:>7,.0f}-{row['max']:<7,.0f} {row['ratio']:>6.2f}")
    for (target, phase), ops in counted.items():
        if ops is None:
            continue
        print(f"\nFUSE requests per message, {target}, {phase}: "
              f"{sum(ops.values()):.1f}")
        print("| " + " | ".join(ops) + " |")
        print("|" + "|".join(" ---: " for _ in ops) + "|")
        print("| " + " | ".join(f"{v:.1f}" for v in ops.values()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
