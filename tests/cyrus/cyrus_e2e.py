#!/usr/bin/env python3
"""End-to-end test: Debian's Cyrus IMAP 3.6 running on a spool that is either
a plain directory (proves the harness) or a spoolfs mount (issue 4).

Usage:
  python3 tests/cyrus/cyrus_e2e.py --layout uuid|legacy
      [--spool-backend plain|spoolfs] [--spoolfs-bin PATH]
      [--messages N] [--seed N] [--keep] [--mount-toml KEYS] [--metapartition]

Needs root.  Standard library only.  See tests/cyrus/README.md.
"""

import argparse
import atexit
import collections
import hashlib
import json
import os
import pwd
import grp
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import daemon_common  # noqa: E402
from daemon_common import (  # noqa: E402  (the tests/ folder, above)
    LMTP, T0, TestFailure, check, default_spoolfs_bin,
    free_port, imap_quote, is_mounted, log, message_id_of, on_signal,
    pgroup_alive, pkg_installed, wait_for_spoolfs)

CYRUS_BIN = "/usr/lib/cyrus/bin"
SERVERNAME = "cyrus-e2e.test"
ADMIN = "admin"
PASSWORD = "e2e-secret"
SYSLOG_PREFIX = "cyrus-e2e"
SENDER = "sender@example.net"

USERS = ["alice@example.org", "carol@example.org",
         "bob@example.com", "dave@example.com"]

# Folders created for the scenario: (admin mailbox name, partition)
FOLDERS = [
    ("user/alice/Work@example.org", "default"),      # plus-address target
    ("user/alice/Old@example.org", "archive"),       # CREATE ... archive
    ("user/bob/Lists@example.com", "default"),       # plus-address target
    ("user/carol/Projects@example.org", "default"),  # RENAMEd to archive
    ("user/carol/Scratch@example.org", "default"),   # RENAMEd in place
    ("user/dave/Tmp@example.com", "default"),        # DELETEd
]
PLUS_TARGETS = {  # recipient -> mailbox it must land in
    "alice+Work@example.org": "user/alice/Work@example.org",
    "bob+Lists@example.com": "user/bob/Lists@example.com",
    "carol+Projects@example.org": "user/carol/Projects@example.org",
    "carol+Scratch@example.org": "user/carol/Scratch@example.org",
    "dave+Tmp@example.com": "user/dave/Tmp@example.com",
}

# --------------------------------------------------------------------------
# naming helpers

def inbox_of(user):
    local, domain = user.split("@")
    return f"user/{local}@{domain}"


def split_mailbox(mbox):
    """'user/alice/Work@example.org' -> ('alice@example.org', 'Work');
    the INBOX gives folder 'INBOX'."""
    m = re.fullmatch(r"user/([^/@]+)((?:/[^@]+)?)@(.+)", mbox)
    if not m:
        raise ValueError(mbox)
    user = f"{m.group(1)}@{m.group(3)}"
    folder = m.group(2)[1:] if m.group(2) else "INBOX"
    return user, folder


def mailbox_name(user, folder):
    local, domain = user.split("@")
    if folder == "INBOX":
        return f"user/{local}@{domain}"
    return f"user/{local}/{folder}@{domain}"


def quota_root_of(mbox):
    """spoolfs' quota unit for a mailbox: the user's top mailbox."""
    user, _ = split_mailbox(mbox)
    return inbox_of(user)


def tenant_of(mbox):
    return mbox.rsplit("@", 1)[1]


# --------------------------------------------------------------------------
# process / environment management

class Env:
    """Everything that must be undone at exit lives here."""

    def __init__(self):
        self.tmp = None
        self.keep = False
        self.master = None
        self.master_log = None
        self.spoolfs = None
        self.spoolfs_log = None
        self.mountpoint = None
        self.syslog = None
        self.cleaned = False
        self.policy_rc_created = False

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        try:
            self.stop_master()
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: stopping master: {e}", file=sys.stderr)
        try:
            self.unmount_spoolfs()
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: unmounting spoolfs: {e}", file=sys.stderr)
        if self.syslog:
            self.syslog.stop()
        if self.policy_rc_created and os.path.exists("/usr/sbin/policy-rc.d"):
            os.unlink("/usr/sbin/policy-rc.d")
        if self.tmp and os.path.isdir(self.tmp):
            if self.keep:
                print(f"kept {self.tmp}", file=sys.stderr)
            elif self.mountpoint and is_mounted(self.mountpoint):
                print(f"NOT removing {self.tmp}: {self.mountpoint} is still "
                      f"mounted", file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def stop_master(self):
        p = self.master
        if p is None:
            return
        self.master = None
        if p.poll() is None:
            try:
                # master shuts its children down itself
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # children (imapd/lmtpd) are in master's process group: make sure
        # none survives, so the spool is not busy at unmount
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pgroup_alive(p.pid):
            time.sleep(0.2)
        if pgroup_alive(p.pid):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p.poll() is None:
            p.wait(timeout=10)
        if self.master_log:
            self.master_log.close()

    def unmount_spoolfs(self):
        p = self.spoolfs
        if p is None and not (self.mountpoint and is_mounted(self.mountpoint)):
            return
        self.spoolfs = None
        mp = self.mountpoint
        for attempt in range(10):
            if not is_mounted(mp):
                break
            r = subprocess.run(["fusermount3", "-u", mp],
                               capture_output=True, text=True)
            if r.returncode == 0:
                break
            time.sleep(0.5)
        if is_mounted(mp):
            print(f"cleanup: {mp} busy, lazy unmount", file=sys.stderr)
            subprocess.run(["fusermount3", "-u", "-z", mp])
        if p is not None:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print("cleanup: spoolfs did not exit, SIGKILL", file=sys.stderr)
                p.kill()
                p.wait(timeout=10)
        if self.spoolfs_log:
            self.spoolfs_log.close()


ENV = Env()


def cyrus_ids():
    pw = pwd.getpwnam("cyrus")
    return pw.pw_uid, grp.getgrnam("mail").gr_gid


def chown_cyrus(path):
    uid, gid = cyrus_ids()
    os.chown(path, uid, gid)


def mkdir_cyrus(path, mode=0o750):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    chown_cyrus(path)


def run(cmd, *, as_cyrus=False, check_rc=True, input=None, timeout=600):
    kw = {}
    if as_cyrus:
        kw.update(user="cyrus", group="mail", extra_groups=["mail"])
    r = subprocess.run(cmd, capture_output=True, text=True, input=input,
                       cwd=ENV.tmp or "/", timeout=timeout, **kw)
    if check_rc and r.returncode != 0:
        raise TestFailure(f"command failed (rc={r.returncode}): "
                          f"{' '.join(cmd)}\nstdout: {r.stdout}\n"
                          f"stderr: {r.stderr}")
    return r


# --------------------------------------------------------------------------
# packages

def system_master_running():
    for pidfile in ("/run/cyrus-master.pid", "/var/run/cyrus-master.pid"):
        try:
            pid = int(open(pidfile).read().split()[0])
            os.kill(pid, 0)
            return True
        except (OSError, ValueError, IndexError):
            pass
    return False


def ensure_packages():
    wanted = ["cyrus-imapd", "sasl2-bin"]
    missing = [p for p in wanted if not pkg_installed(p)]
    if not missing:
        log("packages: cyrus-imapd and sasl2-bin already installed")
        return
    log(f"packages: installing {' '.join(missing)}")
    was_running = system_master_running()
    # keep the package's init script from starting the system Cyrus
    if not os.path.exists("/usr/sbin/policy-rc.d"):
        with open("/usr/sbin/policy-rc.d", "w") as f:
            f.write("#!/bin/sh\n# temporary, cyrus_e2e.py\nexit 101\n")
        os.chmod("/usr/sbin/policy-rc.d", 0o755)
        ENV.policy_rc_created = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        r = subprocess.run(["apt-get", "update", "-q"], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise TestFailure(f"apt-get update failed:\n{r.stderr}")
        r = subprocess.run(["apt-get", "install", "-y", "-q", *missing],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise TestFailure(f"apt-get install failed:\n{r.stdout}\n{r.stderr}")
    finally:
        if ENV.policy_rc_created:
            os.unlink("/usr/sbin/policy-rc.d")
            ENV.policy_rc_created = False
    if not was_running and system_master_running():
        # we started it by installing the package: stop it again
        log("packages: stopping the system cyrus service the install started")
        subprocess.run(["service", "cyrus-imapd", "stop"], capture_output=True)


# --------------------------------------------------------------------------
# syslog capture

class SyslogCapture:
    """Serves /dev/log (datagram) and records every line."""

    def __init__(self, path, outfile):
        self.path = path
        self.lines = []
        self.lock = threading.Lock()
        self.out = open(outfile, "w")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            line = data.decode("utf-8", "replace").rstrip("\n\0")
            with self.lock:
                self.lines.append(line)
                self.out.write(line + "\n")
                self.out.flush()

    def mark(self, text):
        """Put a marker line into the stream, ordered with Cyrus' lines."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.sendto(f"<14>E2E-MARK {text}".encode(), self.path)
        finally:
            s.close()
        # wait until the receiver has seen it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with self.lock:
                if self.lines and any(
                        l.endswith(f"E2E-MARK {text}") for l in self.lines[-50:]):
                    return
            time.sleep(0.02)

    def snapshot(self):
        with self.lock:
            return list(self.lines)

    def stop(self):
        if not self.running:
            return
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()
        try:
            if os.path.exists(self.path) and stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        except OSError:
            pass
        self.out.close()


def syslog_problems(lines):
    """IOERROR/DBERROR lines, except IOERRORs inside E2E-MARK expect-ioerror
    windows (deliberate over-limit deliveries)."""
    bad, allowed = [], []
    in_window = False
    for l in lines:
        if "E2E-MARK expect-ioerror-begin" in l:
            in_window = True
            continue
        if "E2E-MARK expect-ioerror-end" in l:
            in_window = False
            continue
        if "DBERROR" in l:
            bad.append(l)
        elif "IOERROR" in l:
            (allowed if in_window else bad).append(l)
    return bad, allowed


# --------------------------------------------------------------------------
# LMTP client (one reply per accepted recipient after DATA)

# --------------------------------------------------------------------------
# messages

class Corpus(daemon_common.Corpus):
    SENDER = SENDER


ADDED_HDR_RE = re.compile(
    rb"\A(?:(?:Return-Path|Received|X-Cyrus-Session-Id|X-Sieve):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)*\Z")


def same_message(stored, sent):
    """Delivery may prepend Return-Path:/Received:; otherwise byte-equal."""
    if not stored.endswith(sent):
        return False
    return ADDED_HDR_RE.match(stored[:len(stored) - len(sent)]) is not None


# --------------------------------------------------------------------------
# IMAP helpers

class Imap(daemon_common.Imap):
    def command(self, *args):
        """Raw command (for CREATE/RENAME with partition)."""
        typ, data = self.c._simple_command(*args)
        return typ, self.c._untagged_response(typ, data, args[0])[1]


# --------------------------------------------------------------------------
# the harness

class Harness:
    def __init__(self, args):
        self.args = args
        self.layout = args.layout
        self.spoolfs_mode = args.spool_backend == "spoolfs"
        self.corpus = Corpus(args.seed)
        self.rng = random.Random(args.seed + 1)
        # expected contents: admin mailbox name -> Counter of message ids
        self.expected = collections.defaultdict(collections.Counter)
        self.partition = {}      # mailbox -> expected partition
        self.imap_conns = {}
        self.stats = collections.Counter()
        self.timings = []

    # ---- setup ----------------------------------------------------------

    def setup(self):
        tmp = tempfile.mkdtemp(prefix="cyrus-e2e-")
        ENV.tmp = self.tmp = tmp
        ENV.keep = self.args.keep
        os.chmod(tmp, 0o755)
        log(f"temp dir {tmp}")
        self.conf = f"{tmp}/imapd.conf"
        self.cyrus_conf = f"{tmp}/cyrus.conf"
        self.confdir = f"{tmp}/config"
        self.sasldb = f"{tmp}/sasldb2"
        self.syslog_file = f"{tmp}/syslog.txt"
        self.imap_port = free_port()
        self.lmtp_port = free_port()

        # syslog
        if os.path.exists("/dev/log") or os.path.islink("/dev/log"):
            raise TestFailure(
                "/dev/log exists (a syslog daemon runs): this harness serves "
                "/dev/log itself to read Cyrus' IOERROR lines; stop the "
                "syslog daemon or run in a container without one")
        ENV.syslog = self.syslog = SyslogCapture("/dev/log", self.syslog_file)

        # config directory with everything Cyrus expects up front
        mkdir_cyrus(self.confdir, 0o750)
        hashdirs = "abcdefghijklmnopqrstuvwxyz"
        for d in ("db", "proc", "socket", "log", "msg", "user", "quota",
                  "lock", "sieve", "tmp", "ptclient", "sync"):
            mkdir_cyrus(f"{self.confdir}/{d}", 0o750)
        for d in ("user", "quota", "lock", "sieve"):
            for h in hashdirs:
                mkdir_cyrus(f"{self.confdir}/{d}/{h}", 0o750)

        # the spool
        if self.spoolfs_mode:
            self.mount_spoolfs()
        else:
            self.spool = f"{tmp}/spool"
            mkdir_cyrus(self.spool, 0o755)
        for part in ("mail", "archive"):
            mkdir_cyrus(f"{self.spool}/{part}", 0o750)
        self.partitions = {"default": f"{self.spool}/mail",
                           "archive": f"{self.spool}/archive"}

        self.write_imapd_conf()
        self.write_cyrus_conf()
        self.make_sasldb()
        self.start_master()
        # after master's START recover: before it, any tool logs a DBERROR
        # about the missing db/skipstamp
        lint = run([f"{CYRUS_BIN}/cyr_info", "-C", self.conf, "conf-lint"],
                   as_cyrus=True, check_rc=False)
        check(lint.returncode == 0 and not lint.stdout.strip(),
              f"cyr_info conf-lint complains:\n{lint.stdout}{lint.stderr}")

    def write_imapd_conf(self):
        c = self.confdir
        lines = [
            f"configdirectory: {c}",
            f"proc_path: {c}/proc",
            f"mboxname_lockpath: {c}/lock",
            f"lmtpsocket: {c}/socket/lmtp",
            f"idlesocket: {c}/socket/idle",
            f"notifysocket: {c}/socket/notify",
            f"sievedir: {c}/sieve",
            f"temp_path: {c}/tmp",
            f"servername: {SERVERNAME}",
            f"syslog_prefix: {SYSLOG_PREFIX}",
            f"admins: {ADMIN}",
            "defaultpartition: default",
            f"partition-default: {self.spool}/mail",
            f"partition-archive: {self.spool}/archive",
            "virtdomains: userid",
            "unixhierarchysep: yes",
            "altnamespace: yes",
            "hashimapspool: yes",
            f"mailbox_legacy_dirs: {'yes' if self.layout == 'legacy' else 'no'}",
            "allowplaintext: yes",
            "sasl_pwcheck_method: auxprop",
            "sasl_auxprop_plugin: sasldb",
            f"sasl_sasldb_path: {self.sasldb}",
            "sasl_mech_list: PLAIN LOGIN",
            "singleinstancestore: yes",
            "duplicatesuppression: no",
            "expunge_mode: delayed",
            "delete_mode: delayed",
            "lmtp_downcase_rcpt: yes",
            "lmtp_fuzzy_mailbox_match: yes",
            "umask: 077",
        ] + self.metapartition_lines()
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf, 0o644)

    def metapartition_lines(self):
        """With --metapartition: each mailbox's index, cache and expunge
        files on the local filesystem beside the spool (the faster layout of
        the README's Cyrus how-to). cyrus.header stays in the spool: spoolfs
        learns each mailbox's owner from it."""
        if not self.args.metapartition:
            return []
        meta = f"{self.tmp}/meta"
        mkdir_cyrus(meta)
        lines = []
        for part in ("default", "archive"):
            mkdir_cyrus(f"{meta}/{part}")
            lines.append(f"metapartition-{part}: {meta}/{part}")
        return lines + ["metapartition_files: index cache expunge squat annotations"]

    def write_cyrus_conf(self):
        b, C = CYRUS_BIN, self.conf
        text = f"""START {{
  recover cmd="{b}/ctl_cyrusdb -C {C} -r"
}}
SERVICES {{
  imap cmd="{b}/imapd -C {C} -U 30" listen="127.0.0.1:{self.imap_port}" prefork=0 maxchild=20
  lmtp cmd="{b}/lmtpd -C {C} -a" listen="127.0.0.1:{self.lmtp_port}" prefork=0 maxchild=10
}}
EVENTS {{
  checkpoint cmd="{b}/ctl_cyrusdb -C {C} -c" period=30
}}
DAEMON {{
}}
"""
        with open(self.cyrus_conf, "w") as f:
            f.write(text)
        os.chmod(self.cyrus_conf, 0o644)

    def make_sasldb(self):
        entries = [(ADMIN, SERVERNAME)] + [tuple(u.split("@")) for u in USERS]
        for user, realm in entries:
            run(["saslpasswd2", "-f", self.sasldb, "-c", "-p", "-u", realm,
                 user], input=PASSWORD)
        os.chmod(self.sasldb, 0o640)
        chown_cyrus(self.sasldb)

    def start_master(self):
        ENV.master_log = open(f"{self.tmp}/master.out", "w")
        ENV.master = self.master = subprocess.Popen(
            [f"{CYRUS_BIN}/master", "-C", self.conf, "-M", self.cyrus_conf,
             "-p", f"{self.tmp}/master.pid", "-D"],
            stdin=subprocess.DEVNULL, stdout=ENV.master_log,
            stderr=subprocess.STDOUT, start_new_session=True, cwd=self.tmp)
        deadline = time.monotonic() + 30
        while True:
            if self.master.poll() is not None:
                raise TestFailure(f"master exited rc={self.master.returncode}; "
                                  f"see {self.tmp}/master.out and syslog")
            try:
                with socket.create_connection(("127.0.0.1", self.imap_port), 1) as s:
                    s.settimeout(5)
                    if s.recv(100).startswith(b"* OK"):
                        with socket.create_connection(
                                ("127.0.0.1", self.lmtp_port), 1) as s2:
                            s2.settimeout(5)
                            if s2.recv(100).startswith(b"220"):
                                break
            except OSError:
                pass
            check(time.monotonic() < deadline, "master did not come up in 30 s")
            time.sleep(0.2)
        log(f"cyrus master up (pid {self.master.pid}), imap "
            f"127.0.0.1:{self.imap_port}, lmtp 127.0.0.1:{self.lmtp_port}")

    # ---- spoolfs --------------------------------------------------------

    def mount_spoolfs(self):
        tmp = self.tmp
        self.spool = f"{tmp}/spool"
        os.makedirs(self.spool)
        os.chmod(self.spool, 0o755)
        self.part_dirs = {"fast": f"{tmp}/part-fast", "slow": f"{tmp}/part-slow"}
        for d in self.part_dirs.values():
            os.makedirs(d)
            os.chmod(d, 0o755)
        os.makedirs(f"{tmp}/state")
        cfg = f"""default_partition = "fast"
[partitions]
fast = "{tmp}/part-fast"
slow = "{tmp}/part-slow"
[[route]]
match = "archive/**"
partition = "slow"
[mount]
allow_other = true
{self.mount_toml()}
[layout]
kind = "cyrus"
[quota]
warn_percent = 90
metadata_grace = "1M"
[tenants."example.org"]
limit = "{self.args.tenant_limit}"
[mailboxes."user/bob@example.com"]
limit = "{self.args.mailbox_limit}"
[control]
state_dir = "{tmp}/state"
"""
        self.spoolfs_conf = f"{tmp}/spoolfs.toml"
        with open(self.spoolfs_conf, "w") as f:
            f.write(cfg)
        binary = self.args.spoolfs_bin
        check(os.access(binary, os.X_OK), f"spoolfs binary {binary} not found "
              f"or not executable (build it, or pass --spoolfs-bin)")
        self.spoolfs_bin = binary
        ENV.mountpoint = self.spool
        ENV.spoolfs_log = open(f"{tmp}/spoolfs.log", "w")
        ENV.spoolfs = self.spoolfs_proc = subprocess.Popen(
            [binary, "mount", "--config", self.spoolfs_conf, self.spool],
            stdin=subprocess.DEVNULL, stdout=ENV.spoolfs_log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")))
        xattrs = "xattrs=false" not in self.mount_toml().replace(" ", "")
        wait_for_spoolfs(self.spoolfs_proc, self.spool, f"{tmp}/spoolfs.log", xattrs)
        os.chmod(self.spool, 0o755)

    def mount_toml(self):
        """Extra [mount] keys (`--mount-toml`, or the benchmark's)."""
        return getattr(self.args, "mount_toml", "")

    def spoolfs_usage(self):
        r = run([self.spoolfs_bin, "usage", "--json", self.spool])
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise TestFailure(f"spoolfs usage --json: bad JSON ({e}): "
                              f"{r.stdout[:500]}")

    def quota_set(self, kind, name, limit):
        run([self.spoolfs_bin, "quota", "set", f"--{kind}", name, str(limit),
             self.spool])

    def backing_for(self, spool_path):
        """Which backing partition a spool path must be on, and its path
        there, and the other partition's path."""
        rel = os.path.relpath(spool_path, self.spool)
        want = "slow" if rel == "archive" or rel.startswith("archive/") else "fast"
        other = "fast" if want == "slow" else "slow"
        return (want, f"{self.part_dirs[want]}/{rel}",
                f"{self.part_dirs[other]}/{rel}")

    # ---- cyrus tools ----------------------------------------------------

    def tool(self, name, *args, check_rc=True):
        return run([f"{CYRUS_BIN}/{name}", "-C", self.conf, *args],
                   as_cyrus=True, check_rc=check_rc)

    def mbpath(self, mbox):
        r = self.tool("mbpath", mbox)
        p = r.stdout.strip()
        check(p.startswith("/"), f"mbpath {mbox}: {r.stdout!r} {r.stderr!r}")
        return p

    def cyr_expire(self, *extra):
        self.tool("cyr_expire", "-E", "0", "-X", "0", "-D", "0", *extra)

    # ---- IMAP -----------------------------------------------------------

    def imap(self, user):
        c = self.imap_conns.get(user)
        if c is None:
            c = self.imap_conns[user] = Imap(self.imap_port, user, PASSWORD)
        return c

    def admin(self):
        return self.imap(ADMIN)

    def drop_connections(self):
        for c in self.imap_conns.values():
            c.logout()
        self.imap_conns.clear()

    def admin_create(self, mbox, partition=None):
        a = self.admin()
        if partition and partition != "default":
            typ, data = a.command("CREATE", imap_quote(mbox), partition)
        else:
            typ, data = a.c.create(imap_quote(mbox))
        a.ok(typ, data, f"CREATE {mbox} {partition or ''}")
        self.partition[mbox] = partition or "default"
        self.expected[mbox]  # exists, empty

    def list_all(self):
        a = self.admin()
        typ, data = a.c.list('""', '"*"')
        a.ok(typ, data, "LIST * (admin)")
        names = []
        for d in data:
            if d is None:
                continue
            if isinstance(d, tuple):
                d = d[0] + b" " + d[1]
            m = re.match(rb'\(([^)]*)\) (?:"[^"]*"|NIL) (.*)$', d)
            check(m, f"cannot parse LIST line {d!r}")
            name = m.group(2)
            if name.startswith(b'"'):
                name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
            names.append(name.decode())
        return sorted(names)

    # ---- checks ---------------------------------------------------------

    def verify_mailbox(self, mbox):
        """Read every message back over IMAP as its owner and compare."""
        user, folder = split_mailbox(mbox)
        c = self.imap(user)
        msgs = c.fetch_all(folder)
        got = collections.Counter()
        for uid, raw in msgs.items():
            mid = message_id_of(raw)
            check(mid is not None and mid in self.corpus.data,
                  f"{mbox} uid {uid}: unknown message {raw[:300]!r}")
            check(same_message(raw, self.corpus.data[mid]),
                  f"{mbox} uid {uid} ({mid}): bytes differ from what was sent "
                  f"(sha256 {hashlib.sha256(raw).hexdigest()} vs "
                  f"{hashlib.sha256(self.corpus.data[mid]).hexdigest()})")
            got[mid] += 1
        exp = self.expected[mbox]
        if got != exp:
            missing = exp - got
            extra = got - exp
            raise TestFailure(f"{mbox}: contents differ; missing "
                              f"{sorted(missing)[:20]} extra {sorted(extra)[:20]}")
        self.stats["messages read back"] += len(msgs)
        return msgs

    def verify_all(self, what):
        t = time.monotonic()
        names = set(self.list_all())
        want = {m for m in self.expected}
        check(want <= names, f"{what}: mailboxes missing from LIST: "
              f"{sorted(want - names)}")
        check(names <= want, f"{what}: unexpected mailboxes in LIST: "
              f"{sorted(names - want)}")
        n = 0
        for mbox in sorted(self.expected):
            n += len(self.verify_mailbox(mbox))
            self.check_placement(mbox)
        log(f"{what}: {len(want)} mailboxes, {n} messages read back and "
            f"byte-identical, partitions right ({time.monotonic() - t:.1f}s)")

    def check_placement(self, mbox, expect_uids=None):
        """The mailbox directory is on the partition it should be, and in
        spoolfs mode its files are on the right backing partition."""
        path = self.mbpath(mbox)
        part = self.partition[mbox]
        root = self.partitions[part]
        check(path.startswith(root + "/"),
              f"{mbox}: mbpath {path} not under partition {part} ({root})")
        if self.layout == "uuid":
            check("/uuid/" in path, f"{mbox}: uuid layout but path {path}")
        else:
            check("/domain/" in path and "/uuid/" not in path,
                  f"{mbox}: legacy layout but path {path}")
        names = os.listdir(path)
        check("cyrus.header" in names, f"{mbox}: {path} lacks cyrus.header: "
              f"{names}")
        if self.args.metapartition:
            check("cyrus.index" not in names, f"{mbox}: cyrus.index in the "
                  f"spool ({path}), not on the metapartition")
        else:
            check("cyrus.index" in names, f"{mbox}: {path} lacks "
                  f"cyrus.index: {names}")
        if self.spoolfs_mode:
            want, here, other = self.backing_for(path)
            check(os.path.isdir(here), f"{mbox}: {path} not on backing "
                  f"partition {want} ({here} missing)")
            files_here = {n for n in os.listdir(here)
                          if os.path.isfile(os.path.join(here, n))}
            files_mnt = {n for n in names
                         if os.path.isfile(os.path.join(path, n))}
            check(files_mnt <= files_here, f"{mbox}: files "
                  f"{sorted(files_mnt - files_here)[:10]} not on backing "
                  f"partition {want}")
            if os.path.isdir(other):
                stray = [n for n in os.listdir(other)
                         if os.path.isfile(os.path.join(other, n))]
                check(not stray, f"{mbox}: files {stray[:10]} on the wrong "
                      f"backing partition ({other})")
        return path

    def message_files(self, mbox):
        path = self.mbpath(mbox)
        return {int(n[:-1]) for n in os.listdir(path)
                if re.fullmatch(r"\d+\.", n)}

    def check_files_match_uids(self, mbox):
        """After cyr_expire -X 0 exactly the visible messages have files."""
        user, folder = split_mailbox(mbox)
        uids = set(self.imap(user).uids(folder))
        files = self.message_files(mbox)
        check(files == uids, f"{mbox}: message files {sorted(files - uids)[:10]}"
              f" without a message / messages {sorted(uids - files)[:10]} "
              f"without a file")

    # ---- delivery -------------------------------------------------------

    def deliver(self, rcpts, size=None, expect=None, lmtp=None):
        """Deliver one message; expect maps rcpt -> expected code class
        (2 or 4); default all 2.  Returns (mid, results)."""
        mid, data = self.corpus.make(rcpts, size)
        own = lmtp is None
        if own:
            lmtp = LMTP("127.0.0.1", self.lmtp_port)
        try:
            res = lmtp.send(SENDER, rcpts, data)
        finally:
            if own:
                lmtp.close()
        for r in rcpts:
            code, text = res[r]
            want = (expect or {}).get(r, 2)
            check(code // 100 == want, f"LMTP delivery of {mid} to {r}: "
                  f"{code} {text} (expected {want}xx)")
            if code // 100 == 2:
                self.expected[self.target_of(r)][mid] += 1
                self.stats["LMTP deliveries"] += 1
        return mid, res

    def target_of(self, rcpt):
        local, domain = rcpt.split("@")
        if "+" in local:
            return PLUS_TARGETS[rcpt]
        return f"user/{local}@{domain}"

    def phase_deliver(self):
        t = time.monotonic()
        n = self.args.messages
        plus = list(PLUS_TARGETS)
        lmtp = LMTP("127.0.0.1", self.lmtp_port)
        sizes = 0
        for i in range(n):
            r = self.rng.random()
            if r < 0.25:   # multi-recipient, across domains -> hard links
                rcpts = self.rng.sample(USERS, self.rng.randint(2, 4))
            elif r < 0.40:  # plus-addressing into a folder
                rcpts = [self.rng.choice(plus)]
                if self.rng.random() < 0.3:
                    other = self.rng.choice(USERS)
                    if other.split("@")[0] != rcpts[0].split("+")[0]:
                        rcpts.append(other)
            else:
                rcpts = [self.rng.choice(USERS)]
            # make sure every big-message class happens at least once
            size = None
            if i < len(plus):   # every plus target at least once
                rcpts = [plus[i]]
            if i == len(plus):
                size = 3 << 20
                rcpts = ["alice@example.org", "bob@example.com",
                         "carol+Projects@example.org"]
            if i == len(plus) + 1:
                size = 300
            mid, _ = self.deliver(rcpts, size, lmtp=lmtp)
            sizes += len(self.corpus.data[mid])
            if i % 20 == 19:   # fresh connection now and then
                lmtp.close()
                lmtp = LMTP("127.0.0.1", self.lmtp_port)
        lmtp.close()
        self.stats["LMTP messages"] += n
        log(f"delivered {n} messages ({sizes / 1e6:.1f} MB, "
            f"{self.stats['LMTP deliveries']} recipient deliveries) over LMTP "
            f"in {time.monotonic() - t:.1f}s")
        for rcpt, mbox in PLUS_TARGETS.items():
            check(self.expected[mbox], f"no message was plus-addressed to "
                  f"{rcpt}; raise --messages")
        # single instance store: a multi-recipient message is hard-linked
        self.check_hardlinks()

    def check_hardlinks(self):
        linked = 0
        for mbox in self.expected:
            path = self.mbpath(mbox)
            for n in os.listdir(path):
                if re.fullmatch(r"\d+\.", n):
                    if os.stat(os.path.join(path, n)).st_nlink > 1:
                        linked += 1
        check(linked > 0, "no hard-linked message files: single-instance "
              "store did not happen")
        log(f"single-instance store: {linked} message files have st_nlink > 1")

    # ---- IMAP operations ------------------------------------------------

    def uid_of(self, user, folder, mid):
        msgs = self.imap(user).fetch_all(folder)
        for uid, raw in msgs.items():
            if message_id_of(raw) == mid:
                return uid
        raise TestFailure(f"{mid} not found in {user} {folder}")

    def uid_map(self, user, folder):
        """{uid: mid} via a header fetch."""
        return self.imap(user).uid_map(folder)

    def phase_imap_ops(self):
        t = time.monotonic()
        user = "alice@example.org"
        c = self.imap(user)
        inbox, work, old = (inbox_of(user), "user/alice/Work@example.org",
                            "user/alice/Old@example.org")

        # APPEND (default partition and archive partition, one big)
        for folder, mbox, size in (("Work", work, 2000), ("Work", work, 60000),
                                   ("Old", old, 1500), ("Old", old, 2 << 20),
                                   ("INBOX", inbox, 800)):
            mid, data = self.corpus.make([user], size, prefix="A")
            typ, resp = c.c.append(imap_quote(folder), r"(\Seen)", None, data)
            c.ok(typ, resp, f"APPEND to {folder}")
            self.expected[mbox][mid] += 1
            self.stats["APPEND"] += 1

        # COPY: within the partition and across partitions
        ids = self.uid_map(user, "INBOX")
        uids = sorted(ids)
        check(len(uids) >= 30, f"{user} INBOX has only {len(uids)} messages; "
              f"raise --messages")
        c.select("INBOX")
        for dest_folder, dest, chunk in (("Work", work, uids[0:5]),
                                         ("Old", old, uids[5:10])):
            typ, resp = c.c.uid("COPY", ",".join(map(str, chunk)),
                                imap_quote(dest_folder))
            c.ok(typ, resp, f"UID COPY to {dest_folder}")
            for u in chunk:
                self.expected[dest][ids[u]] += 1
            self.stats["COPY"] += len(chunk)

        # MOVE: INBOX -> Work (same partition), INBOX -> Old (across)
        for dest_folder, dest, chunk in (("Work", work, uids[10:13]),
                                         ("Old", old, uids[13:16])):
            typ, resp = c.c.uid("MOVE", ",".join(map(str, chunk)),
                                imap_quote(dest_folder))
            c.ok(typ, resp, f"UID MOVE to {dest_folder}")
            for u in chunk:
                self.expected[dest][ids[u]] += 1
                self.expected[inbox][ids[u]] -= 1
            self.stats["MOVE"] += len(chunk)
        # MOVE Work -> Old (default -> archive) and Old -> Work (back)
        wids = self.uid_map(user, "Work")
        c.select("Work")
        chunk = sorted(wids)[:3]
        typ, resp = c.c.uid("MOVE", ",".join(map(str, chunk)), imap_quote("Old"))
        c.ok(typ, resp, "UID MOVE Work -> Old")
        for u in chunk:
            self.expected[old][wids[u]] += 1
            self.expected[work][wids[u]] -= 1
        oids = self.uid_map(user, "Old")
        c.select("Old")
        chunk = sorted(oids)[:2]
        typ, resp = c.c.uid("MOVE", ",".join(map(str, chunk)), imap_quote("Work"))
        c.ok(typ, resp, "UID MOVE Old -> Work")
        for u in chunk:
            self.expected[work][oids[u]] += 1
            self.expected[old][oids[u]] -= 1
        self.stats["MOVE"] += 5

        # EXPUNGE, then cyr_expire removes the files (delayed expunge)
        ids = self.uid_map(user, "INBOX")
        c.select("INBOX")
        gone = sorted(ids)[-10:]
        typ, resp = c.c.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT",
                            r"(\Deleted)")
        c.ok(typ, resp, "STORE \\Deleted")
        typ, resp = c.c.expunge()
        c.ok(typ, resp, "EXPUNGE")
        for u in gone:
            self.expected[inbox][ids[u]] -= 1
        self.stats["EXPUNGE"] += len(gone)
        files = self.message_files(inbox)
        check(set(gone) <= files, "delayed expunge: files vanished before "
              "cyr_expire")
        c.unselect()
        self.cyr_expire()
        files = self.message_files(inbox)
        check(not (set(gone) & files), f"cyr_expire -X 0 left expunged "
              f"files {sorted(set(gone) & files)}")
        for mbox in (inbox, work, old):
            self.check_files_match_uids(mbox)
        self.clean_counters()
        log(f"APPEND/COPY/MOVE/EXPUNGE+cyr_expire done "
            f"({time.monotonic() - t:.1f}s)")
        self.verify_all("after APPEND/COPY/MOVE/EXPUNGE")

        # RENAME within a partition, to the archive partition (same name and
        # new name), and DELETE
        t = time.monotonic()
        self.drop_connections()
        a = self.admin()
        # Cyrus refuses a new name and a new partition in one RENAME
        # ("Cross-server or cross-partition move w/rename not supported"):
        # rename first, then move with RENAME name name partition
        renames = [
            ("user/carol/Scratch@example.org", "user/carol/Scratch2@example.org",
             None),
            ("user/carol/Projects@example.org",
             "user/carol/ProjectsArchive@example.org", None),
            ("user/carol/ProjectsArchive@example.org",
             "user/carol/ProjectsArchive@example.org", "archive"),
            ("user/bob/Lists@example.com", "user/bob/Lists@example.com",
             "archive"),
        ]
        for old_name, new_name, part in renames:
            args = [imap_quote(old_name), imap_quote(new_name)]
            if part:
                args.append(part)
            before = self.mbpath(old_name)
            typ, data = a.command("RENAME", *args)
            a.ok(typ, data, f"RENAME {old_name} {new_name} {part or ''}")
            log(f"RENAME {old_name} -> {new_name} {part or ''}: "
                f"{os.path.relpath(before, self.spool)} -> "
                f"{os.path.relpath(self.mbpath(new_name), self.spool)}")
            contents = self.expected.pop(old_name)
            prev_part = self.partition.pop(old_name)
            self.expected[new_name] = contents
            self.partition[new_name] = part or prev_part
            self.stats["RENAME"] += 1
        # plus-addressing now must find the renamed folder
        PLUS_TARGETS["bob+Lists@example.com"] = "user/bob/Lists@example.com"
        self.deliver(["bob+Lists@example.com"], 5000)

        doomed = "user/dave/Tmp@example.com"
        doomed_path = self.mbpath(doomed)
        # the owner deletes it (an admin would first need the 'x' right)
        d = self.imap("dave@example.com")
        typ, data = d.c.delete(imap_quote("Tmp"))
        d.ok(typ, data, f"DELETE Tmp ({doomed})")
        del self.expected[doomed]
        del self.partition[doomed]
        del PLUS_TARGETS["dave+Tmp@example.com"]
        self.stats["DELETE"] += 1
        names = self.list_all()
        check(doomed not in names, f"{doomed} still listed after DELETE")
        self.cyr_expire()
        left = []
        if os.path.isdir(doomed_path):
            left = [n for n in os.listdir(doomed_path)
                    if re.fullmatch(r"\d+\.", n)]
        check(not left, f"DELETE + cyr_expire -D 0 left message files in "
              f"{doomed_path}: {left[:10]}")
        deleted = [n for n in self.list_all() if n.startswith("DELETED")]
        check(not deleted, f"cyr_expire -D 0 left deleted mailboxes {deleted}")
        log(f"RENAME (in partition, to archive, in place to archive) and "
            f"DELETE done ({time.monotonic() - t:.1f}s)")
        self.verify_all("after RENAME/DELETE")

    def clean_counters(self):
        for m in self.expected:
            self.expected[m] = +self.expected[m]

    # ---- limits (spoolfs only) -------------------------------------------

    def usage_of(self, kind, name):
        u = self.spoolfs_usage()
        for e in u[kind]:
            if e["name"] == name:
                return e
        raise TestFailure(f"spoolfs usage --json has no {kind} entry {name}: "
                          f"{json.dumps(u)[:1000]}")

    def deliver_until_refused(self, rcpt, others=(), size=200_000, max_n=60):
        """Deliver size-byte messages to rcpt until it gets a 4xx.  Returns
        the number accepted before.  The refused one goes to rcpt plus
        `others` (who must still receive it)."""
        accepted = 0
        for i in range(max_n):
            rcpts = [rcpt, *others]
            mid, data = self.corpus.make(rcpts, size, prefix="Q")
            self.syslog.mark(f"expect-ioerror-begin {mid}")
            lmtp = LMTP("127.0.0.1", self.lmtp_port)
            try:
                res = lmtp.send(SENDER, rcpts, data)
            finally:
                lmtp.close()
            self.syslog.mark(f"expect-ioerror-end {mid}")
            for o in others:
                code, text = res[o]
                check(code == 250, f"{mid}: other recipient {o} got {code} "
                      f"{text} while {rcpt} was at its limit")
                self.expected[self.target_of(o)][mid] += 1
            code, text = res[rcpt]
            if code == 250:
                self.expected[self.target_of(rcpt)][mid] += 1
                accepted += 1
                continue
            check(code == 451 and "4.3.0" in text,
                  f"over-limit delivery to {rcpt}: expected 451 4.3.0, got "
                  f"{code} {text}")
            self.stats["refused over limit (451 4.3.0)"] += 1
            return accepted
        raise TestFailure(f"{rcpt}: {max_n} deliveries of {size} bytes never "
                          f"hit the limit")

    def expunge_until_below(self, user, free_bytes):
        """EXPUNGE the biggest messages of user's INBOX worth free_bytes,
        then cyr_expire."""
        c = self.imap(user)
        mbox = inbox_of(user)
        ids = self.uid_map(user, "INBOX")
        sizes = sorted(((len(self.corpus.data[m]), u) for u, m in ids.items()),
                       reverse=True)
        gone, freed = [], 0
        for sz, u in sizes:
            if freed >= free_bytes:
                break
            gone.append(u)
            freed += sz
        c.select("INBOX")
        typ, resp = c.c.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT",
                            r"(\Deleted)")
        c.ok(typ, resp, f"{user}: STORE \\Deleted at the limit")
        typ, resp = c.c.expunge()
        c.ok(typ, resp, f"{user}: EXPUNGE at the limit")
        c.unselect()
        for u in gone:
            self.expected[mbox][ids[u]] -= 1
        self.clean_counters()
        self.cyr_expire("-u", user)
        self.check_files_match_uids(mbox)

    def full_check(self, what, users):
        """read back + chk_cyrus + reconstruct -n -G for some users"""
        for u in users:
            for mbox in [m for m in self.expected if split_mailbox(m)[0] == u]:
                self.verify_mailbox(mbox)
        self.chk_cyrus()
        for u in users:
            self.reconstruct_check(u)
        log(f"{what}: mailboxes intact (read back, chk_cyrus, reconstruct -n -G)")

    def phase_limits(self):
        t = time.monotonic()
        self.drop_connections()
        grace = 1 << 20
        size = 200_000

        # -- mailbox limit: bob@example.com --
        bob = "bob@example.com"
        bob_mb = inbox_of(bob)
        used = self.usage_of("mailboxes", bob_mb)["used"]
        limit = used + 3 * size + size // 2
        self.quota_set("mailbox", bob_mb, limit)
        e = self.usage_of("mailboxes", bob_mb)
        check(e["limit"] == limit, f"quota set --mailbox: usage shows limit "
              f"{e['limit']}, expected {limit}")
        log(f"limit: {bob_mb} used {used}, limit set to {limit}")
        n = self.deliver_until_refused(bob, others=["alice@example.org"],
                                       size=size)
        check(n >= 2, f"{bob}: only {n} deliveries before the limit")
        e = self.usage_of("mailboxes", bob_mb)
        check(e["used"] <= limit + grace, f"{bob_mb} used {e['used']} > limit "
              f"{limit} + grace")
        # other recipients, same tenant and other tenant, keep receiving
        self.deliver(["dave@example.com", "carol@example.org"], 3000)
        # bob still refused (single and with others)
        self.deliver_until_refused(bob, others=["dave@example.com"], size=size,
                                   max_n=1)
        self.full_check(f"{bob} at its limit", [bob])
        # bob expunges below the limit and receives again
        self.expunge_until_below(bob, 4 * size)
        e = self.usage_of("mailboxes", bob_mb)
        check(e["used"] + size < limit, f"{bob_mb}: after EXPUNGE + cyr_expire "
              f"used {e['used']} still near limit {limit}")
        self.deliver([bob], size)
        self.full_check(f"{bob} after expunge and new delivery", [bob])
        log(f"mailbox limit: {n} accepted, then 451 4.3.0; others kept "
            f"receiving; EXPUNGE + cyr_expire freed space; delivery works again")

        # -- tenant limit: example.org --
        tenant = "example.org"
        carol = "carol@example.org"
        alice = "alice@example.org"
        tused = self.usage_of("tenants", tenant)["used"]
        tlimit = tused + 3 * size + size // 2
        self.quota_set("tenant", tenant, tlimit)
        log(f"limit: tenant {tenant} used {tused}, limit set to {tlimit}")
        n = self.deliver_until_refused(carol, others=["dave@example.com"],
                                       size=size)
        check(n >= 2, f"{carol}: only {n} deliveries before the tenant limit")
        # the whole tenant is full: alice is refused too, bob (other tenant)
        # receives
        self.deliver_until_refused(alice, others=[bob], size=size, max_n=1)
        e = self.usage_of("tenants", tenant)
        check(e["used"] <= tlimit + 2 * grace, f"tenant {tenant} used "
              f"{e['used']} > limit {tlimit}")
        self.full_check(f"tenant {tenant} at its limit", [carol, alice])
        self.expunge_until_below(carol, 4 * size)
        self.deliver([carol], size)
        self.deliver([alice], 2000)
        self.full_check(f"tenant {tenant} after expunge", [carol, alice])
        log(f"tenant limit: {n} accepted, then 451 4.3.0 for every mailbox of "
            f"the tenant; other tenant kept receiving; recovered after EXPUNGE "
            f"({time.monotonic() - t:.1f}s)")

    def check_usage_recount(self, when="at the end"):
        """spoolfs usage --json == recount of the backing files."""
        u = self.spoolfs_usage()
        recount = collections.Counter()
        per_folder = collections.defaultdict(list)
        seen = set()  # a file counts once per quota root (SEMANTICS.md)
        for mbox in self.expected:
            root = quota_root_of(mbox)
            path = self.mbpath(mbox)
            rel = os.path.relpath(path, self.spool)
            for pdir in self.part_dirs.values():
                d = os.path.join(pdir, rel)
                if not os.path.isdir(d):
                    continue
                for n in os.listdir(d):
                    st = os.lstat(os.path.join(d, n))
                    if stat.S_ISREG(st.st_mode) and (root, st.st_dev, st.st_ino) not in seen:
                        seen.add((root, st.st_dev, st.st_ino))
                        recount[root] += st.st_size
            per_folder[root].append(f"{mbox} [{rel}]")
        reported = {e["name"]: e for e in u["mailboxes"]}
        errors = []
        for root, total in sorted(recount.items()):
            e = reported.get(root)
            if e is None:
                errors.append(f"{root}: missing from usage (recount {total})")
            elif e["used"] != total:
                errors.append(f"{root}: usage {e['used']} != recount {total} "
                              f"(diff {e['used'] - total}); its directories: "
                              + "; ".join(per_folder[root]))
            elif e.get("tenant") != tenant_of(root):
                errors.append(f"{root}: tenant {e.get('tenant')}")
        for name, e in reported.items():
            if name not in recount and e["used"] != 0:
                errors.append(f"{name}: usage {e['used']} but no such mailbox")
        tenants = collections.Counter()
        for root, total in recount.items():
            tenants[tenant_of(root)] += total
        for e in u["tenants"]:
            if e["used"] != tenants.get(e["name"], 0):
                errors.append(f"tenant {e['name']}: usage {e['used']} != "
                              f"recount {tenants.get(e['name'], 0)}")
        check(not errors, f"{when}: spoolfs usage disagrees with a recount "
              "of the backing files:\n  " + "\n  ".join(errors))
        log(f"{when}: spoolfs usage --json equals the recount for {len(recount)} "
            f"mailboxes and {len(tenants)} tenants")

    # ---- end checks -----------------------------------------------------

    def chk_cyrus(self):
        for part in ("default", "archive"):
            r = self.tool("chk_cyrus", "-P", part, check_rc=False)
            check(r.returncode == 0 and not r.stdout.strip(),
                  f"chk_cyrus -P {part}: rc={r.returncode}\nmissing:\n"
                  f"{r.stdout}\nstderr:\n{r.stderr}")

    def reconstruct_check(self, user):
        # reconstruct prints the (external) name of every mailbox it visits
        # and a line in internal form ("example.com!user.bob uid 1 guid
        # mismatch") per problem; its exit code is 0 either way
        r = self.tool("reconstruct", "-n", "-G", "-r", "-u", user,
                      check_rc=False)
        mine = {m for m in self.expected if split_mailbox(m)[0] == user}
        lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        bad = [l for l in lines if l.strip() not in mine]
        seen = {l.strip() for l in lines} & mine
        check(r.returncode == 0 and not bad,
              f"reconstruct -n -G -r -u {user}: rc={r.returncode}\n"
              + "\n".join(bad[:30]))
        check(seen == mine, f"reconstruct -n -G -r -u {user} visited "
              f"{sorted(seen)}, expected {sorted(mine)}")

    def final_checks(self):
        self.drop_connections()
        self.chk_cyrus()
        for u in USERS:
            self.reconstruct_check(u)
        log("chk_cyrus -P default/archive and reconstruct -n -G: clean")

    def check_syslog(self):
        time.sleep(0.5)
        lines = self.syslog.snapshot()
        check(any(SYSLOG_PREFIX in l for l in lines),
              "no Cyrus line reached the /dev/log capture")
        bad, allowed = syslog_problems(lines)
        if allowed:
            log(f"syslog: {len(allowed)} IOERROR line(s) inside deliberate "
                f"over-limit deliveries, e.g. {allowed[0][:200]}")
        check(not bad, f"{len(bad)} IOERROR/DBERROR line(s) in Cyrus' log "
              f"({self.syslog_file}):\n  " + "\n  ".join(bad[:20]))
        log(f"syslog: {len(lines)} lines, no IOERROR/DBERROR")

    # ---- main -----------------------------------------------------------

    def run(self):
        self.setup()
        a = self.admin()
        for u in USERS:
            self.admin_create(inbox_of(u))
        for mbox, part in FOLDERS:
            self.admin_create(mbox, part)
        # plus-addressing: lmtpd delivers to user+folder only if the LMTP
        # session's identity has the 'p' right on the folder (else INBOX)
        for mbox in PLUS_TARGETS.values():
            typ, data = a.c.setacl(imap_quote(mbox), "anyone", "p")
            a.ok(typ, data, f"SETACL {mbox} anyone p")
        log(f"created {len(USERS)} users in 2 domains and {len(FOLDERS)} "
            f"folders (one on partition archive)")
        self.phase_deliver()
        self.verify_all("after delivery")
        self.phase_imap_ops()
        if self.spoolfs_mode:
            self.check_usage_recount("after the IMAP operations")
            self.phase_limits()
            self.drop_connections()
            self.cyr_expire()
            self.verify_all("after limits")
            self.check_usage_recount()
        self.final_checks()
        self.check_syslog()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layout", choices=["uuid", "legacy"], required=True)
    ap.add_argument("--spool-backend", choices=["plain", "spoolfs"],
                    default="plain")
    ap.add_argument("--spoolfs-bin", default=None)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--tenant-limit", default="512M",
                    help="initial [tenants.\"example.org\"] limit (the test "
                    "lowers it at run time)")
    ap.add_argument("--mailbox-limit", default="256M",
                    help="initial [mailboxes.\"user/bob@example.com\"] limit")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (config, spool, syslog.txt)")
    ap.add_argument("--mount-toml", default="", metavar="KEYS",
                    help="extra [mount] keys, ';'-separated, e.g. "
                    "'xattrs = false' (the configuration the Cyrus how-to "
                    "recommends)")
    ap.add_argument("--metapartition", action="store_true",
                    help="Cyrus's index, cache and expunge files on a "
                    "metapartition outside the spool (the Cyrus how-to's "
                    "faster layout); cyrus.header stays in the spool")
    args = ap.parse_args()
    args.mount_toml = args.mount_toml.replace(";", "\n")
    if args.spoolfs_bin is None:
        args.spoolfs_bin = default_spoolfs_bin()
    elif os.sep in args.spoolfs_bin:
        # tools run with cwd = the temp dir
        args.spoolfs_bin = os.path.abspath(args.spoolfs_bin)
    if os.geteuid() != 0:
        print("cyrus_e2e.py must run as root", file=sys.stderr)
        return 2

    atexit.register(ENV.cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    h = Harness(args)
    ok = False
    try:
        ensure_packages()
        h.run()
        ok = True
    except TestFailure as e:
        print(f"\nFAIL: {e}", file=sys.stderr)
    except SystemExit as e:
        print(f"\nFAIL: interrupted (exit {e.code})", file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"\nFAIL: unexpected {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        if not ok and ENV.tmp:
            ENV.keep = ENV.keep or False
            for name in ("syslog.txt", "master.out", "spoolfs.log"):
                p = os.path.join(ENV.tmp, name)
                if os.path.exists(p):
                    with open(p, errors="replace") as f:
                        tail = f.readlines()[-25:]
                    if tail:
                        print(f"--- last lines of {name} ---", file=sys.stderr)
                        sys.stderr.writelines(tail)
        h.drop_connections() if h.imap_conns else None
        ENV.cleanup()
    elapsed = time.monotonic() - T0
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(h.stats.items()))
    verdict = "PASS" if ok else "FAIL"
    print(f"\ncyrus_e2e {verdict}: layout={args.layout} "
          f"backend={args.spool_backend} in {elapsed:.0f}s; {summary}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
