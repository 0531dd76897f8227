#!/usr/bin/env python3
"""Real-daemon benchmark: Debian's Cyrus IMAP 3.6 delivering over LMTP and
serving IMAP FETCH, on a plain directory (native) and on a spoolfs mount over
partitions on the same disk, in one run, alternating targets round by round.

Workloads (issue 13):
  cyrus-deliver  N messages (seeded sizes: mostly 1.5-12 KB, some up to
                 400 KB) to M mailboxes over D domains through C parallel
                 LMTP connections; messages per second.
  cyrus-fetch    SELECT + UID FETCH 1:* BODY.PEEK[] of every mailbox, as
                 each owner, over C parallel IMAP connections, page cache
                 dropped first; messages per second.

For spoolfs it also reports the FUSE requests per message by opcode, read
from the daemon's request counters (`spoolfs usage --requests --json`), when
the binary offers them.

Usage (root; Cyrus is installed if missing, as by the end-to-end test):
  python3 bench/cyrus_bench.py [--rounds 3] [--messages 2000]
      [--mailboxes 100] [--domains 10] [--connections 4]
      [--layout uuid|legacy] [--spoolfs-bin PATH] [--metapartition]
      [--json-out FILE]

Each round sets up a fresh private Cyrus (its own config, ports on
127.0.0.1, spool) per target, so no round inherits another's caches or
databases. Medians over rounds, min-max, and the ratio spoolfs/native.
Standard library only; the Cyrus harness is the end-to-end test's.
"""

import argparse
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import scratch_fs  # noqa: E402


def load_e2e():
    path = os.path.join(REPO, "tests", "cyrus", "cyrus_e2e.py")
    spec = importlib.util.spec_from_file_location("cyrus_e2e", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


E2E = load_e2e()


def say(msg):
    print(f"[cyrus-bench] {msg}", file=sys.stderr, flush=True)


def message_size(rng):
    """Typical mail: mostly 1.5-12 KB, a tenth 12-100 KB, a few to 400 KB."""
    r = rng.random()
    if r < 0.02:
        return rng.randint(100_000, 400_000)
    if r < 0.12:
        return rng.randint(12_000, 100_000)
    return rng.randint(1_500, 12_000)


class Workload:
    """The same seeded users, messages and recipients for every target."""

    def __init__(self, args):
        self.users = [f"u{i:03d}@d{i % args.domains:02d}.example"
                      for i in range(args.mailboxes)]
        rng = random.Random(args.seed)
        corpus = E2E.Corpus(args.seed)
        self.messages = []  # (recipient, raw bytes)
        for _ in range(args.messages):
            rcpt = rng.choice(self.users)
            _, raw = corpus.make([rcpt], size=message_size(rng))
            self.messages.append((rcpt, raw))
        self.bytes = sum(len(raw) for _, raw in self.messages)


class Round:
    """One private Cyrus on one target, set up, measured, torn down."""

    def __init__(self, args, work, target):
        self.args, self.work, self.target = args, work, target
        E2E.ENV = E2E.Env()  # the harness's cleanup state is per run
        hargs = types.SimpleNamespace(
            layout=args.layout,
            spool_backend="plain" if target == "native" else "spoolfs",
            spoolfs_bin=args.compare_bin if target == "spoolfs-b" else args.spoolfs_bin,
            seed=args.seed, keep=False,
            mount_toml=(args.compare_toml if target == "spoolfs-b"
                        else args.mount_toml).replace(";", "\n"),
            # limits that are never reached: quota is on, not in the way
            tenant_limit="1T", mailbox_limit="1T",
            metapartition=args.metapartition)
        self.h = E2E.Harness(hargs)

    def run(self):
        try:
            self.h.setup()
            self.add_users()
            for user in self.work.users:
                self.h.admin_create(E2E.inbox_of(user))
            self.h.drop_connections()
            before = self.requests()
            deliver = self.deliver()
            after_deliver = self.requests()
            self.drop_caches()
            fetch = self.fetch()
            after_fetch = self.requests()
            return {"cyrus-deliver": deliver, "cyrus-fetch": fetch,
                    "requests": request_delta(before, after_deliver, after_fetch)}
        finally:
            self.h.drop_connections()
            self.keep_daemon_log()
            E2E.ENV.cleanup()

    def keep_daemon_log(self):
        """With --keep-logs DIR, the spoolfs daemon's log (e.g. with
        RUST_LOG=fuser=debug, every request) outlives the round."""
        src = os.path.join(self.h.tmp or "", "spoolfs.log")
        if self.args.keep_logs and os.path.exists(src):
            os.makedirs(self.args.keep_logs, exist_ok=True)
            E2E.ENV.spoolfs_log and E2E.ENV.spoolfs_log.flush()
            dst = os.path.join(self.args.keep_logs, f"spoolfs-{os.getpid()}-"
                               f"{int(time.time() * 1000)}.log")
            shutil.copyfile(src, dst)

    def add_users(self):
        for user in self.work.users:
            name, realm = user.split("@")
            E2E.run(["saslpasswd2", "-f", self.h.sasldb, "-c", "-p", "-u",
                     realm, name], input=E2E.PASSWORD)

    def deliver(self):
        def worker(share):
            lmtp = E2E.LMTP("127.0.0.1", self.h.lmtp_port)
            for rcpt, raw in share:
                code, text = lmtp.send(E2E.SENDER, [rcpt], raw)[rcpt]
                if code != 250:
                    raise E2E.TestFailure(f"LMTP to {rcpt}: {code} {text}")
            lmtp.close()

        _, elapsed = in_parallel(worker, self.work.messages, self.args.connections)
        return len(self.work.messages) / elapsed

    def fetch(self):
        def worker(users):
            n = 0
            for user in users:
                c = E2E.Imap(self.h.imap_port, user, E2E.PASSWORD)
                n += len(c.fetch_all("INBOX"))
                c.logout()
            return n

        counts, elapsed = in_parallel(worker, self.work.users, self.args.connections)
        fetched = sum(counts)
        if fetched != len(self.work.messages):
            raise E2E.TestFailure(f"fetched {fetched} of "
                                  f"{len(self.work.messages)} messages")
        return fetched / elapsed

    def drop_caches(self):
        subprocess.run(["sync"], check=False)
        try:
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        except OSError as e:
            say(f"cannot drop caches ({e}): fetch runs warm")

    def requests(self):
        """The daemon's request counters by opcode, or None."""
        if self.target == "native":
            return None
        r = subprocess.run([self.h.spoolfs_bin, "usage", "--requests", "--json",
                            self.h.spool], capture_output=True, text=True)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout).get("requests")
        except json.JSONDecodeError:
            return None


def request_delta(before, after_deliver, after_fetch):
    if not (before and after_deliver and after_fetch):
        return None

    def minus(a, b):
        return {op: a.get(op, 0) - b.get(op, 0) for op in a
                if a.get(op, 0) - b.get(op, 0) > 0}
    return {"deliver": minus(after_deliver, before),
            "fetch": minus(after_fetch, after_deliver)}


def in_parallel(fn, items, n):
    """Runs fn on n interleaved shares of items, one thread each; returns
    their results and the wall time, or raises the first error."""
    shares = [items[i::n] for i in range(n) if items[i::n]]
    results, errors = [], []

    def run(share):
        try:
            results.append(fn(share))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in shares]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - t
    if errors:
        raise errors[0]
    return results, elapsed


def summarise(results, targets, messages):
    """Medians and ratios; request counts per message by opcode."""
    table = {}
    for wl in ("cyrus-deliver", "cyrus-fetch"):
        row = {}
        for t in targets:
            vals = [r[wl] for r in results[t]]
            row[t] = {"median": statistics.median(vals), "min": min(vals),
                      "max": max(vals), "runs": vals}
        if "native" in row:
            row["ratio"] = {t: row[t]["median"] / row["native"]["median"]
                            for t in targets if t != "native"}
        table[wl] = row
    per_msg = {}
    for t in targets:
        counted = [r["requests"] for r in results.get(t, []) if r["requests"]]
        if counted:
            per_msg[t] = {phase: {op: n / messages for op, n in sorted(
                ops.items(), key=lambda kv: -kv[1])}
                for phase, ops in counted[-1].items()}
    return table, per_msg


def print_table(table, per_msg, targets):
    cols = ["workload", "metric"]
    for t in targets:
        cols += [t, f"{t} min-max"]
    others = [t for t in targets if t != "native"]
    cols += [f"{t}/native" for t in others]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join(" --- " for _ in cols) + "|")
    for wl, row in table.items():
        cells = [wl, "msgs/s"]
        for t in targets:
            cells += [f"{row[t]['median']:,.0f}",
                      f"{row[t]['min']:,.0f}-{row[t]['max']:,.0f}"]
        cells += [f"{row['ratio'][t]:.2f}" if "ratio" in row else "n/a"
                  for t in others]
        print("| " + " | ".join(cells) + " |")
    for target, phases in per_msg.items():
        for phase, ops in phases.items():
            total = sum(ops.values())
            print(f"\nFUSE requests per message, {target}, {phase}: {total:.1f}")
            print("| " + " | ".join(ops) + " |")
            print("|" + "|".join(" ---: " for _ in ops) + "|")
            print("| " + " | ".join(f"{v:.1f}" for v in ops.values()) + " |")


def run_rounds(args, work, targets):
    """Every target once per round, alternating the order so neither
    always runs on a warmer disk."""
    results = {t: [] for t in targets}
    for r in range(args.rounds):
        order = targets if r % 2 == 0 else list(reversed(targets))
        for t in order:
            res = Round(args, work, t).run()
            say(f"round {r + 1}/{args.rounds} {t}: deliver "
                f"{res['cyrus-deliver']:,.0f} msgs/s, fetch "
                f"{res['cyrus-fetch']:,.0f} msgs/s")
            results[t].append(res)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--mailboxes", type=int, default=100)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--layout", choices=["uuid", "legacy"], default="uuid")
    ap.add_argument("--targets", default="native,spoolfs")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--spoolfs-bin", default=None)
    ap.add_argument("--compare-bin", default=None, metavar="PATH",
                    help="a second spoolfs build, measured as target "
                    "spoolfs-b in the same alternating rounds (A/B of a lever)")
    ap.add_argument("--mount-toml", default="", metavar="KEYS",
                    help="extra [mount] keys for spoolfs, ';'-separated, e.g. "
                    "'xattrs = false'")
    ap.add_argument("--compare-toml", default=None, metavar="KEYS",
                    help="extra [mount] keys for a second spoolfs target "
                    "(spoolfs-b, same binary unless --compare-bin)")
    ap.add_argument("--metapartition", action="store_true",
                    help="every target keeps Cyrus's index, cache and "
                    "expunge files on a metapartition outside its spool "
                    "(the Cyrus how-to's faster layout)")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--keep-logs", default=None, metavar="DIR",
                    help="copy each spoolfs round's daemon log into DIR")
    scratch_fs.add_argument(ap)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("cyrus_bench.py must run as root", file=sys.stderr)
        return 2
    args.spoolfs_bin = os.path.abspath(args.spoolfs_bin or E2E.default_spoolfs_bin())
    targets = [t for t in args.targets.split(",") if t]
    if args.compare_bin or args.compare_toml is not None:
        args.compare_bin = os.path.abspath(args.compare_bin or args.spoolfs_bin)
        args.compare_toml = args.compare_toml or args.mount_toml
        targets.append("spoolfs-b")
    E2E.ensure_packages()
    work = Workload(args)
    say(f"{len(work.messages)} messages, {work.bytes / 1e6:.1f} MB, "
        f"{len(work.users)} mailboxes over {args.domains} domains, "
        f"{args.connections} connections, layout {args.layout}")
    with scratch_fs.scratch_filesystem(args.fs, args.fs_size, say):
        results = run_rounds(args, work, targets)
    table, per_msg = summarise(results, targets, len(work.messages))
    print_table(table, per_msg, targets)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"table": table, "requests_per_message": per_msg,
                       "args": vars(args)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
