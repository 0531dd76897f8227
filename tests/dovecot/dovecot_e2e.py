#!/usr/bin/env python3
"""End-to-end test: Debian's Dovecot 2.3 (LMTP + IMAP, virtual users over
three domains) on a spool that is either a plain directory (--backend native,
proves the harness) or a spoolfs mount with a pattern layout (issue 14).

Usage:
  python3 tests/dovecot/dovecot_e2e.py --format maildir|mdbox
      [--backend native|spoolfs] [--spoolfs-bin PATH] [--messages N]
      [--seed N] [--keep] [--local-index]

Needs root.  Standard library only.  See tests/dovecot/README.md.
"""

import argparse
import atexit
import collections
import hashlib
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import daemon_common  # noqa: E402
from daemon_common import (  # noqa: E402  (the tests/ folder, above)
    LMTP, T0, TestFailure, check, default_spoolfs_bin,
    free_port, imap_quote, is_mounted, log, message_id_of, on_signal,
    pgroup_alive, pkg_installed, wait_for_spoolfs)

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
PASSWORD = "e2e-secret"
SENDER = "sender@example.net"
METADATA_GRACE = 1 << 20
PACKAGES = ["dovecot-core", "dovecot-lmtpd"]
# dovecot-imapd and cyrus-imapd conflict (both "Provides/Conflicts:
# imap-server"): installing one removes the other, which the Cyrus test
# needs.  So unless dovecot-imapd is installed already, its binaries are
# unpacked (dpkg-deb -x, same version as dovecot-core) into this cache and
# the private Dovecot runs them from there; no package is removed.
IMAPD_CACHE = "/var/cache/spoolfs-tests"
SYSTEM_LIBEXEC = "/usr/lib/dovecot"

# three tenants; example.com is routed to the other partition
USERS = ["alice@example.org", "carol@example.org",
         "bob@example.com", "dave@example.com", "erin@example.net"]
FOLDERS = ["Work", "Archive", "Trash", "Lists"]
SUBSCRIBED = ["Work", "Archive", "Trash"]
SLOW_TENANTS = {"example.com"}
PLUS = ["alice+Work@example.org", "bob+Lists@example.com",
        "carol+Archive@example.org", "erin+Work@example.net"]
# LMTP may only prepend these header fields
ADDED_HDR_RE = re.compile(
    rb"\A(?:(?:Return-Path|Delivered-To|Received):[^\r\n]*\r\n"
    rb"(?:[ \t][^\r\n]*\r\n)*)*\Z")
# Dovecot's log: these mean trouble outside a deliberate over-limit window
BAD_LOG_RE = re.compile(r"\b(Error|Panic|Fatal):")

def user_parts(user):
    local, domain = user.split("@")
    return local, domain


def mailbox_of(user):
    """spoolfs' quota root for a user: pattern folder `local` in tenant `domain`."""
    return user


# --------------------------------------------------------------------------
# process / environment management: everything started is stopped by PID

class Env:
    def __init__(self):
        self.tmp = None
        self.keep = False
        self.dovecot = None
        self.dovecot_out = None
        self.spoolfs = None
        self.spoolfs_log = None
        self.mountpoint = None
        self.cleaned = False
        self.policy_rc_created = False

    def cleanup(self):
        if self.cleaned:
            return
        self.cleaned = True
        try:
            self.stop_dovecot()
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: stopping dovecot: {e}", file=sys.stderr)
        try:
            self.unmount_spoolfs()
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: unmounting spoolfs: {e}", file=sys.stderr)
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

    def stop_dovecot(self):
        p = self.dovecot
        if p is None:
            return
        self.dovecot = None
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)  # the master stops its children
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        # its children are in its process group (own session): none may
        # survive, or the spool stays busy at unmount
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pgroup_alive(p.pid):
            time.sleep(0.1)
        if pgroup_alive(p.pid):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if p.poll() is None:
            p.wait(timeout=10)
        if self.dovecot_out:
            self.dovecot_out.close()
            self.dovecot_out = None

    def unmount_spoolfs(self):
        p = self.spoolfs
        mp = self.mountpoint
        if p is None and not (mp and is_mounted(mp)):
            return
        self.spoolfs = None
        for _ in range(10):
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
            self.spoolfs_log = None


ENV = Env()


def run(cmd, *, check_rc=True, input=None, timeout=600, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, input=input,
                       cwd=ENV.tmp or "/", timeout=timeout, env=env)
    if check_rc and r.returncode != 0:
        raise TestFailure(f"command failed (rc={r.returncode}): "
                          f"{' '.join(cmd)}\nstdout: {r.stdout}\n"
                          f"stderr: {r.stderr}")
    return r


# --------------------------------------------------------------------------
# packages: installed without ever starting the system's Dovecot

def system_dovecot_pids():
    r = subprocess.run(["pgrep", "-x", "dovecot"], capture_output=True,
                       text=True)
    return {int(p) for p in r.stdout.split()}


def pkg_version(name):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", name],
                       capture_output=True, text=True)
    return r.stdout.strip()


def imap_libexec():
    """Where `imap` and `imap-login` are: the installed dovecot-imapd, or
    its package unpacked into IMAPD_CACHE (fetched with apt-get download
    the first time)."""
    if pkg_installed("dovecot-imapd"):
        return SYSTEM_LIBEXEC
    version = pkg_version("dovecot-core")
    dest = f"{IMAPD_CACHE}/dovecot-imapd-{version.replace(':', '_')}"
    libexec = f"{dest}/usr/lib/dovecot"
    if os.access(f"{libexec}/imap", os.X_OK):
        return libexec
    log(f"packages: unpacking dovecot-imapd {version} into {dest} "
        f"(installing it would remove cyrus-imapd)")
    work = tempfile.mkdtemp(prefix="dovecot-imapd-")
    try:
        os.chmod(work, 0o755)   # apt's _apt user downloads into it
        r = subprocess.run(["apt-get", "download", "-q",
                            f"dovecot-imapd={version}"], cwd=work,
                           capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            r = subprocess.run(["apt-get", "download", "-q",
                                f"dovecot-imapd={version}"], cwd=work,
                               capture_output=True, text=True)
        debs = [n for n in os.listdir(work) if n.endswith(".deb")]
        if r.returncode != 0 or len(debs) != 1:
            raise TestFailure(f"apt-get download dovecot-imapd={version} "
                              f"failed:\n{r.stdout}\n{r.stderr}")
        tmp_dest = dest + ".tmp"
        shutil.rmtree(tmp_dest, ignore_errors=True)
        os.makedirs(tmp_dest)
        run(["dpkg-deb", "-x", os.path.join(work, debs[0]), tmp_dest])
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp_dest, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    check(os.access(f"{libexec}/imap", os.X_OK),
          f"{libexec}/imap missing after unpacking dovecot-imapd")
    return libexec


def ensure_packages():
    missing = [p for p in PACKAGES if not pkg_installed(p)]
    if not missing:
        log(f"packages: {' '.join(PACKAGES)} already installed")
        return
    log(f"packages: installing {' '.join(missing)}")
    before = system_dovecot_pids()
    # policy-rc.d exit 101 keeps invoke-rc.d (the package's postinst) from
    # starting or restarting the system service; an existing one is left be
    if not os.path.exists("/usr/sbin/policy-rc.d"):
        with open("/usr/sbin/policy-rc.d", "w") as f:
            f.write("#!/bin/sh\n# temporary, dovecot_e2e.py\nexit 101\n")
        os.chmod("/usr/sbin/policy-rc.d", 0o755)
        ENV.policy_rc_created = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        r = subprocess.run(["apt-get", "update", "-q"], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise TestFailure(f"apt-get update failed:\n{r.stderr}")
        r = subprocess.run(["apt-get", "install", "-y", "-q",
                            "--no-install-recommends", *missing],
                           env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise TestFailure(f"apt-get install failed:\n{r.stdout}\n{r.stderr}")
    finally:
        if ENV.policy_rc_created:
            os.unlink("/usr/sbin/policy-rc.d")
            ENV.policy_rc_created = False
    started = system_dovecot_pids() - before
    if started:
        # a service manager without policy-rc.d started it: stop exactly it
        log(f"packages: stopping the system dovecot the install started "
            f"({sorted(started)})")
        for pid in started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


# --------------------------------------------------------------------------
# LMTP client (one reply per accepted recipient after DATA)

# --------------------------------------------------------------------------
# messages

class Corpus(daemon_common.Corpus):
    SENDER = SENDER
    SUBJECT = "spoolfs dovecot e2e message"
    BIG_MAX = 3 << 20


# --------------------------------------------------------------------------
# IMAP

class Imap(daemon_common.Imap):
    def __init__(self, port, user):
        super().__init__(port, user, PASSWORD)

    def folders(self, subscribed=False):
        typ, data = (self.c.lsub if subscribed else self.c.list)('""', '"*"')
        self.ok(typ, data, "LSUB" if subscribed else "LIST")
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


# --------------------------------------------------------------------------
# the harness

class Harness:
    def __init__(self, args):
        self.args = args
        self.fmt = args.format
        self.spoolfs_mode = args.backend == "spoolfs"
        self.corpus = Corpus(args.seed)
        self.rng = random.Random(args.seed + 1)
        # (user, folder) -> Counter of message ids
        self.expected = collections.defaultdict(collections.Counter)
        self.subscribed = collections.defaultdict(set)
        self.imap_conns = {}
        self.stats = collections.Counter()
        self.log_windows = []    # (start, end) offsets of dovecot.log
        self.mail = pwd.getpwnam("mail")
        self.mount_options = []  # e.g. ["-o", "nopassthrough"] (bench)

    # ---- setup ----------------------------------------------------------

    def setup(self):
        tmp = tempfile.mkdtemp(prefix="dovecot-e2e-")
        ENV.tmp = self.tmp = tmp
        ENV.keep = self.args.keep
        os.chmod(tmp, 0o755)
        log(f"temp dir {tmp}")
        self.imap_port = free_port()
        self.lmtp_port = free_port()
        self.dovecot_log = f"{tmp}/dovecot.log"
        self.conf = f"{tmp}/dovecot.conf"
        self.spool = f"{tmp}/spool"
        os.makedirs(self.spool)
        if self.spoolfs_mode:
            self.write_spoolfs_conf()
            self.mount_spoolfs()
        os.chown(self.spool, self.mail.pw_uid, self.mail.pw_gid)
        os.chmod(self.spool, 0o755)
        self.imap_dir = imap_libexec()
        self.write_dovecot_conf()
        self.start_dovecot()

    def mail_location(self):
        top = "Maildir" if self.fmt == "maildir" else "mdbox"
        location = f"{self.fmt}:{self.spool}/%d/%n/{top}"
        if not self.args.local_index:
            return location
        # Dovecot's index and control files (uidlist, subscriptions) on the
        # local filesystem beside the spool, as the Dovecot how-to suggests
        # for speed: the mount then serves the messages alone.
        return (f"{location}:INDEX={self.tmp}/index/%d/%n"
                f":CONTROL={self.tmp}/control/%d/%n")

    def write_dovecot_conf(self):
        tmp = self.tmp
        for d in ("run", "state"):
            os.makedirs(f"{tmp}/{d}", exist_ok=True)
            os.chmod(f"{tmp}/{d}", 0o755)
        if self.args.local_index:
            for d in ("index", "control"):
                os.makedirs(f"{tmp}/{d}", exist_ok=True)
                os.chown(f"{tmp}/{d}", self.mail.pw_uid, self.mail.pw_gid)
        with open(f"{tmp}/users", "w") as f:
            for u in USERS:
                f.write(f"{u}:{{PLAIN}}{PASSWORD}::::::\n")
        os.chmod(f"{tmp}/users", 0o640)
        os.chown(f"{tmp}/users", 0, pwd.getpwnam("dovecot").pw_gid)
        text = f"""# private instance of dovecot_e2e.py: nothing from /etc/dovecot
instance_name = dovecot-e2e-{os.getpid()}
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {self.dovecot_log}
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {self.mail.pw_uid}
last_valid_uid = {self.mail.pw_uid}
mail_location = {self.mail_location()}
mdbox_rotate_size = 8M
lmtp_save_to_detail_mailbox = yes
recipient_delimiter = +
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {tmp}/users
}}
userdb {{
  driver = passwd-file
  args = {tmp}/users
  default_fields = uid={self.mail.pw_uid} gid={self.mail.pw_gid} home={self.spool}/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Trash {{
    special_use = \\Trash
  }}
}}
{self.imap_services()}service imap-login {{
  executable = {self.imap_dir}/imap-login
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
}}
"""
        with open(self.conf, "w") as f:
            f.write(text)

    def imap_services(self):
        """The dovecot-imapd programs, from wherever imap_libexec found
        them (imap-login's block follows in the config)."""
        return "".join(
            f"service {name} {{\n  executable = {self.imap_dir}/{name}\n}}\n"
            for name in ("imap", "imap-hibernate", "imap-urlauth",
                         "imap-urlauth-login", "imap-urlauth-worker"))

    def start_dovecot(self):
        ENV.dovecot_out = open(f"{self.tmp}/dovecot.out", "a")
        ENV.dovecot = self.dovecot = subprocess.Popen(
            [DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
            stdout=ENV.dovecot_out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=self.tmp)
        deadline = time.monotonic() + 30
        while True:
            if self.dovecot.poll() is not None:
                raise TestFailure(f"dovecot exited rc={self.dovecot.returncode};"
                                  f" see {self.tmp}/dovecot.out, dovecot.log")
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
            check(time.monotonic() < deadline, "dovecot did not come up in 30 s")
            time.sleep(0.1)
        log(f"dovecot up (pid {self.dovecot.pid}), imap 127.0.0.1:"
            f"{self.imap_port}, lmtp 127.0.0.1:{self.lmtp_port}")

    def stop_dovecot(self):
        self.drop_connections()
        ENV.stop_dovecot()
        self.dovecot = None

    # ---- spoolfs --------------------------------------------------------

    def write_spoolfs_conf(self):
        tmp = self.tmp
        self.part_dirs = {"fast": f"{tmp}/part-fast", "slow": f"{tmp}/part-slow"}
        for d in self.part_dirs.values():
            os.makedirs(d)
            os.chmod(d, 0o755)
        os.makedirs(f"{tmp}/state-spoolfs")
        top = "Maildir" if self.fmt == "maildir" else "mdbox"
        routes = "".join(f'[[route]]\nmatch = "{t}/**"\npartition = "slow"\n'
                         for t in sorted(SLOW_TENANTS))
        cfg = f"""default_partition = "fast"
[partitions]
fast = "{tmp}/part-fast"
slow = "{tmp}/part-slow"
{routes}[mount]
allow_other = true
[layout]
kind = "pattern"
pattern = "{{tenant}}/{{mailbox}}/{top}/**"
[quota]
warn_percent = 90
metadata_grace = "{METADATA_GRACE}"
[tenants."example.org"]
limit = "{self.args.tenant_limit}"
[mailboxes."bob@example.com"]
limit = "{self.args.mailbox_limit}"
[control]
state_dir = "{tmp}/state-spoolfs"
"""
        self.spoolfs_conf = f"{tmp}/spoolfs.toml"
        with open(self.spoolfs_conf, "w") as f:
            f.write(cfg)
        binary = self.args.spoolfs_bin
        check(os.access(binary, os.X_OK), f"spoolfs binary {binary} not found "
              f"or not executable (build it, or pass --spoolfs-bin)")
        self.spoolfs_bin = binary
        run([binary, "check", "--config", self.spoolfs_conf])

    def mount_spoolfs(self):
        ENV.mountpoint = self.spool
        ENV.spoolfs_log = open(f"{self.tmp}/spoolfs.log", "a")
        ENV.spoolfs = self.spoolfs_proc = subprocess.Popen(
            [self.spoolfs_bin, "mount", "--config", self.spoolfs_conf,
             *self.mount_options, self.spool],
            stdin=subprocess.DEVNULL, stdout=ENV.spoolfs_log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info")))
        options = ",".join(self.mount_options[1::2]).split(",")
        wait_for_spoolfs(self.spoolfs_proc, self.spool, f"{self.tmp}/spoolfs.log",
                         xattrs="noxattrs" not in options)

    def spoolfs_usage(self):
        r = run([self.spoolfs_bin, "usage", "--json", self.spool])
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise TestFailure(f"spoolfs usage --json: bad JSON ({e}): "
                              f"{r.stdout[:500]}")

    def usage_of(self, kind, name):
        for e in self.spoolfs_usage()[kind]:
            if e["name"] == name:
                return e
        raise TestFailure(f"{name} missing from spoolfs usage {kind}")

    def quota_set(self, kind, name, limit):
        run([self.spoolfs_bin, "quota", "set", f"--{kind}", name, str(limit),
             self.spool])

    def recount(self):
        """Bytes on the partitions per quota root (user), once per distinct
        file however many names it has there (SEMANTICS.md)."""
        distinct = collections.Counter()
        for user in USERS:
            local, domain = user_parts(user)
            seen = set()
            for pdir in self.part_dirs.values():
                top = os.path.join(pdir, domain, local)
                for dirpath, dirnames, filenames in os.walk(top):
                    for n in filenames:
                        st = os.lstat(os.path.join(dirpath, n))
                        if stat.S_ISREG(st.st_mode):
                            if (st.st_dev, st.st_ino) not in seen:
                                seen.add((st.st_dev, st.st_ino))
                                distinct[user] += st.st_size
        return distinct

    def check_usage_recount(self, when):
        u = self.spoolfs_usage()
        distinct = self.recount()
        reported = {e["name"]: e for e in u["mailboxes"]}
        tenants_rep = {e["name"]: e["used"] for e in u["tenants"]}
        model = None
        errors = []
        # a file counts once per mailbox however many names it has there
        for name, counts in (("distinct files", distinct),):
            errs = []
            for user in USERS:
                e = reported.get(mailbox_of(user))
                got = e["used"] if e else 0
                if got != counts[user]:
                    errs.append(f"{user}: usage {got} != recount by {name} "
                                f"{counts[user]} (diff {got - counts[user]})")
                if e and e.get("tenant") != user_parts(user)[1]:
                    errs.append(f"{user}: tenant {e.get('tenant')}")
            tsum = collections.Counter()
            for user in USERS:
                tsum[user_parts(user)[1]] += counts[user]
            for t, total in tsum.items():
                if tenants_rep.get(t, 0) != total:
                    errs.append(f"tenant {t}: usage {tenants_rep.get(t, 0)} "
                                f"!= recount by {name} {total}")
            if not errs:
                model = name
                break
            errors.append(errs)
        if model is None:
            raise TestFailure(f"{when}: spoolfs usage disagrees with a "
                              "recount of the partitions:\n  "
                              + "\n  ".join(errors[0]))
        for name in reported:
            check(name in USERS or reported[name]["used"] == 0,
                  f"{when}: usage for unexpected mailbox {name}")
        log(f"{when}: spoolfs usage --json equals the recount (by {model}) "
            f"for {len(USERS)} mailboxes and {len(set(user_parts(u)[1] for u in USERS))} tenants")
        return u

    def check_placement(self):
        """example.com lives on `slow`, the rest on `fast`, nothing astray."""
        for user in USERS:
            local, domain = user_parts(user)
            want = "slow" if domain in SLOW_TENANTS else "fast"
            other = "fast" if want == "slow" else "slow"
            here = os.path.join(self.part_dirs[want], domain, local)
            check(os.path.isdir(here), f"{user}: nothing on partition {want}")
            stray = []
            top = os.path.join(self.part_dirs[other], domain, local)
            for dirpath, _, filenames in os.walk(top):
                stray += [os.path.join(dirpath, n) for n in filenames]
            check(not stray, f"{user}: files on the wrong partition: "
                  f"{stray[:5]}")
            self.check_index_place(user, here)

    def check_index_place(self, user, spool_dir):
        """Dovecot's index files are in the user's spool directory, or with
        --local-index only in the local index directory."""
        def indexes(top):
            return [os.path.join(d, n) for d, _, names in os.walk(top)
                    for n in names if n.startswith("dovecot.index")]
        local, domain = user_parts(user)
        in_spool = indexes(spool_dir)
        if not self.args.local_index:
            check(in_spool, f"{user}: no dovecot.index* in {spool_dir}")
            return
        check(not in_spool, f"{user}: index files in the spool with "
              f"--local-index: {in_spool[:3]}")
        kept = f"{self.tmp}/index/{domain}/{local}"
        check(indexes(kept), f"{user}: no dovecot.index* in {kept}")

    # ---- IMAP -----------------------------------------------------------

    def imap(self, user):
        c = self.imap_conns.get(user)
        if c is None:
            c = self.imap_conns[user] = Imap(self.imap_port, user)
        return c

    def drop_connections(self):
        for c in self.imap_conns.values():
            c.logout()
        self.imap_conns.clear()

    def verify_folder(self, user, folder):
        msgs = self.imap(user).fetch_all(folder)
        got = collections.Counter()
        for uid, raw in msgs.items():
            mid = message_id_of(raw)
            check(mid is not None and mid in self.corpus.data,
                  f"{user} {folder} uid {uid}: unknown message {raw[:300]!r}")
            sent = self.corpus.data[mid]
            tail = raw[len(raw) - len(sent):] if len(raw) >= len(sent) else b""
            check(hashlib.sha256(tail).hexdigest() == self.corpus.sha[mid]
                  and ADDED_HDR_RE.match(raw[:len(raw) - len(sent)]),
                  f"{user} {folder} uid {uid} ({mid}): bytes differ from what "
                  f"was sent (sha256 {hashlib.sha256(raw).hexdigest()} vs "
                  f"{self.corpus.sha[mid]}, {len(raw)} vs {len(sent)} bytes)")
            got[mid] += 1
        exp = +self.expected[(user, folder)]
        if got != exp:
            raise TestFailure(f"{user} {folder}: contents differ; missing "
                              f"{sorted(exp - got)[:20]} extra "
                              f"{sorted(got - exp)[:20]}")
        self.stats["messages read back (SHA-256)"] += len(msgs)
        return len(msgs)

    def folders_of(self, user):
        return sorted({f for (u, f) in self.expected if u == user} | {"INBOX"})

    def verify_user(self, user):
        c = self.imap(user)
        names = c.folders()
        want = self.folders_of(user)
        check(names == want, f"{user}: LIST shows {names}, expected {want}")
        subs = c.folders(subscribed=True)
        check(sorted(self.subscribed[user]) == subs,
              f"{user}: LSUB shows {subs}, expected "
              f"{sorted(self.subscribed[user])}")
        return sum(self.verify_folder(user, f) for f in want)

    def verify_all(self, what):
        t = time.monotonic()
        n = sum(self.verify_user(u) for u in USERS)
        if self.spoolfs_mode:
            self.check_placement()
        log(f"{what}: {n} messages in {len(USERS)} accounts read back, "
            f"SHA-256 identical; folders and subscriptions as expected "
            f"({time.monotonic() - t:.1f}s)")

    def doveadm(self, *args, check_rc=True):
        return run([DOVEADM, "-c", self.conf, *args], check_rc=check_rc)

    def force_resync(self, users):
        for u in users:
            self.doveadm("force-resync", "-u", u, "*")
        self.stats["doveadm force-resync"] += len(users)

    # ---- delivery -------------------------------------------------------

    def target_of(self, rcpt):
        local, domain = user_parts(rcpt)
        if "+" in local:
            local, folder = local.split("+", 1)
            return (f"{local}@{domain}", folder)
        return (rcpt, "INBOX")

    def deliver(self, rcpts, size=None, expect=None, lmtp=None):
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

    def phase_setup_folders(self):
        for u in USERS:
            c = self.imap(u)
            for f in FOLDERS:
                c.ok(*c.c.create(imap_quote(f)), f"CREATE {f}")
                self.expected[(u, f)]
            for f in SUBSCRIBED:
                c.ok(*c.c.subscribe(imap_quote(f)), f"SUBSCRIBE {f}")
                self.subscribed[u].add(f)
        log(f"{len(USERS)} users in 3 domains, folders {FOLDERS} created, "
            f"{SUBSCRIBED} subscribed")

    def phase_deliver(self):
        t = time.monotonic()
        n = self.args.messages
        lmtp = LMTP("127.0.0.1", self.lmtp_port)
        sizes = 0
        for i in range(n):
            r = self.rng.random()
            if r < 0.25:   # several recipients, across tenants and partitions
                rcpts = self.rng.sample(USERS, self.rng.randint(2, 4))
            elif r < 0.40:  # plus-addressing into a folder
                rcpts = [self.rng.choice(PLUS)]
            else:
                rcpts = [self.rng.choice(USERS)]
            size = None
            if i < len(PLUS):
                rcpts = [PLUS[i]]
            if i == len(PLUS):
                size = 3 << 20
                rcpts = ["alice@example.org", "carol@example.org",
                         "bob@example.com"]
            mid, _ = self.deliver(rcpts, size, lmtp=lmtp)
            sizes += len(self.corpus.data[mid])
            if i % 20 == 19:
                lmtp.close()
                lmtp = LMTP("127.0.0.1", self.lmtp_port)
        lmtp.close()
        log(f"delivered {n} messages ({sizes / 1e6:.1f} MB, "
            f"{self.stats['LMTP deliveries']} recipient deliveries) over LMTP "
            f"in {time.monotonic() - t:.1f}s")

    # ---- IMAP operations ------------------------------------------------

    def move_expected(self, user, src, dst, ids, uids, copy=False):
        for u in uids:
            self.expected[(user, dst)][ids[u]] += 1
            if not copy:
                self.expected[(user, src)][ids[u]] -= 1

    def phase_imap_ops(self):
        t = time.monotonic()
        user = "alice@example.org"
        c = self.imap(user)
        for folder, size in (("Work", 2000), ("Work", 60000),
                             ("Archive", 2 << 20), ("INBOX", 800)):
            mid, data = self.corpus.make([user], size, prefix="A")
            typ, resp = c.c.append(imap_quote(folder), r"(\Seen)", None, data)
            c.ok(typ, resp, f"APPEND to {folder}")
            self.expected[(user, folder)][mid] += 1
            self.stats["APPEND"] += 1
        ids = c.uid_map("INBOX")
        uids = sorted(ids)
        check(len(uids) >= 20, f"{user} INBOX has only {len(uids)} messages; "
              f"raise --messages")
        c.select("INBOX")
        for dst, chunk in (("Work", uids[0:5]), ("Archive", uids[5:8])):
            c.ok(*c.c.uid("COPY", ",".join(map(str, chunk)), imap_quote(dst)),
                 f"UID COPY to {dst}")
            self.move_expected(user, "INBOX", dst, ids, chunk, copy=True)
            self.stats["COPY"] += len(chunk)
        for dst, chunk in (("Work", uids[8:11]), ("Trash", uids[11:14])):
            c.ok(*c.c.uid("MOVE", ",".join(map(str, chunk)), imap_quote(dst)),
                 f"UID MOVE to {dst}")
            self.move_expected(user, "INBOX", dst, ids, chunk)
            self.stats["MOVE"] += len(chunk)
        c.unselect()
        wids = c.uid_map("Work")
        c.select("Work")
        chunk = sorted(wids)[:2]
        c.ok(*c.c.uid("MOVE", ",".join(map(str, chunk)), imap_quote("Archive")),
             "UID MOVE Work -> Archive")
        self.move_expected(user, "Work", "Archive", wids, chunk)
        self.stats["MOVE"] += len(chunk)
        c.unselect()
        # flags and EXPUNGE
        ids = c.uid_map("INBOX")
        c.select("INBOX")
        gone = sorted(ids)[-6:]
        c.ok(*c.c.uid("STORE", ",".join(map(str, sorted(ids)[:4])), "+FLAGS",
                      r"(\Seen \Flagged $Label1)"), "STORE flags")
        c.ok(*c.c.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT",
                      r"(\Deleted)"), "STORE \\Deleted")
        c.ok(*c.c.expunge(), "EXPUNGE")
        for u in gone:
            self.expected[(user, "INBOX")][ids[u]] -= 1
        self.stats["EXPUNGE"] += len(gone)
        c.unselect()
        # folders: CREATE, RENAME (with contents), DELETE, (UN)SUBSCRIBE
        c.ok(*c.c.create(imap_quote("Projects")), "CREATE Projects")
        c.ok(*c.c.create(imap_quote("Projects/2024")), "CREATE Projects/2024")
        self.expected[(user, "Projects")]
        self.expected[(user, "Projects/2024")]
        c.ok(*c.c.rename(imap_quote("Lists"), imap_quote("Projects/Lists")),
             "RENAME Lists Projects/Lists")
        self.expected[(user, "Projects/Lists")] = self.expected.pop((user, "Lists"))
        c.ok(*c.c.subscribe(imap_quote("Projects/Lists")), "SUBSCRIBE")
        self.subscribed[user].add("Projects/Lists")
        c.ok(*c.c.unsubscribe(imap_quote("Archive")), "UNSUBSCRIBE")
        self.subscribed[user].discard("Archive")
        bob = self.imap("bob@example.com")
        bob.ok(*bob.c.delete(imap_quote("Trash")), "DELETE Trash")
        del self.expected[("bob@example.com", "Trash")]
        bob.ok(*bob.c.unsubscribe(imap_quote("Trash")), "UNSUBSCRIBE Trash")
        self.subscribed["bob@example.com"].discard("Trash")
        # Dovecot keeps a \Trash special-use folder name in the namespace;
        # bob's is gone and comes back on demand
        bob.ok(*bob.c.create(imap_quote("Trash")), "CREATE Trash")
        self.expected[("bob@example.com", "Trash")]
        self.stats["CREATE/RENAME/DELETE/SUBSCRIBE"] += 7
        log(f"APPEND/COPY/MOVE/STORE/EXPUNGE/CREATE/RENAME/DELETE/SUBSCRIBE "
            f"done ({time.monotonic() - t:.1f}s)")

    # ---- limits (spoolfs only) -----------------------------------------

    def log_offset(self):
        try:
            return os.path.getsize(self.dovecot_log)
        except OSError:
            return 0

    def expect_errors(self, fn, *a, **kw):
        """Run fn; Dovecot errors it logs are deliberate (over-limit)."""
        start = self.log_offset()
        try:
            return fn(*a, **kw)
        finally:
            time.sleep(0.3)   # the log process writes asynchronously
            self.log_windows.append((start, self.log_offset()))

    def deliver_until_refused(self, rcpt, others, size, max_n=40):
        """Deliver size-byte messages to rcpt (+ others) until LMTP refuses
        rcpt (maildir: 552 5.2.2, mdbox: 451 4.2.0); others must keep
        receiving."""
        accepted = 0
        for _ in range(max_n):
            rcpts = [rcpt, *others]
            mid, data = self.corpus.make(rcpts, size, prefix="Q")
            files_before = self.mdbox_files(rcpt)
            lmtp = LMTP("127.0.0.1", self.lmtp_port)
            try:
                res = self.expect_errors(lmtp.send, SENDER, rcpts, data)
            finally:
                lmtp.close()
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
            # maildir maps EDQUOT to "not enough quota" (552 5.2.2, a
            # permanent failure); Dovecot 2.3's mdbox treats a failed
            # write() of its storage file as an internal error (451 4.2.0,
            # the MTA retries) and logs "write(...) failed: Disk quota
            # exceeded"
            want = (552, "5.2.2") if self.fmt == "maildir" else (451, "4.2.0")
            check(code == want[0] and text.startswith(want[1]),
                  f"over-limit delivery to {rcpt}: expected {want[0]} "
                  f"{want[1]}, got {code} {text}")
            self.stats[f"refused over limit ({want[0]} {want[1]})"] += 1
            self.refusal = f"{want[0]} {want[1]}"
            if self.fmt == "mdbox":
                self.check_mdbox_refusal(rcpt, files_before)
            self.last_refusal = f"{code} {text}"
            return accepted
        raise TestFailure(f"{rcpt}: {max_n} deliveries of {size} bytes never "
                          f"hit the limit")

    def mdbox_files(self, user):
        """{m.N: size} of a user's mdbox storage (through the mount)."""
        if self.fmt != "mdbox":
            return {}
        local, domain = user_parts(user)
        d = f"{self.spool}/{domain}/{local}/mdbox/storage"
        return {n: os.stat(f"{d}/{n}").st_size for n in os.listdir(d)
                if re.fullmatch(r"m\.\d+", n)}

    def check_mdbox_refusal(self, user, before):
        """Where the refused write landed: appending to an m.N file that
        already holds messages (the write crosses the limit in the middle
        of the file), or a new file; Dovecot must leave the file as it was
        (it truncates the partial message) or at least consistent."""
        with open(f"{self.tmp}/spoolfs.log", errors="replace") as f:
            refused = [line for line in f if "EDQUOT: write" in line
                       and "/mdbox/storage/" in line]
        check(refused, f"{user}: no refused mdbox storage write in the log")
        m = re.search(r"/mdbox/storage/(\S+?):", refused[-1])
        name = m.group(1) if m else "?"
        after = self.mdbox_files(user)
        if name in before:
            self.stats["mdbox: refused write in the middle of an m.N file"] += 1
            check(after.get(name) == before[name],
                  f"{user}: {name} was {before[name]} bytes before the refused "
                  f"delivery, {after.get(name)} after (partial message left)")
            log(f"{user}: the refused write was an append to {name} "
                f"({before[name]} bytes, holding earlier messages); Dovecot "
                f"truncated it back")
        else:
            self.stats["mdbox: refused write into a new storage file"] += 1
            check(set(after) <= set(before) | {name},
                  f"{user}: storage files {sorted(set(after) - set(before))} "
                  f"appeared with the refused delivery")
            log(f"{user}: the refused write was into a new file ({name})")

    def at_limit_ops(self, user):
        """What a full user must still be able to do: flags, CREATE, RENAME,
        SUBSCRIBE, and COPY/MOVE inside the mailbox (maildir links)."""
        c = self.imap(user)
        ids = c.uid_map("INBOX")
        uids = sorted(ids)
        c.select("INBOX")
        c.ok(*c.c.uid("STORE", ",".join(map(str, uids[:3])), "+FLAGS",
                      r"(\Seen \Answered $AtLimit)"), "STORE flags at the limit")
        c.ok(*c.c.uid("STORE", str(uids[0]), "-FLAGS", r"(\Seen)"),
             "STORE -FLAGS at the limit")
        c.unselect()
        c.ok(*c.c.create(imap_quote("Full")), "CREATE at the limit")
        c.ok(*c.c.rename(imap_quote("Full"), imap_quote("Full2")),
             "RENAME at the limit")
        c.ok(*c.c.subscribe(imap_quote("Full2")), "SUBSCRIBE at the limit")
        c.ok(*c.c.unsubscribe(imap_quote("Work")), "UNSUBSCRIBE at the limit")
        self.expected[(user, "Full2")]
        self.subscribed[user].add("Full2")
        self.subscribed[user].discard("Work")
        self.stats["at the limit: STORE/CREATE/RENAME/SUBSCRIBE"] += 1
        # COPY and MOVE inside the full mailbox (the "move to Trash")
        c.select("INBOX")
        for verb, dst, uid in (("COPY", "Trash", uids[1]),
                               ("MOVE", "Archive", uids[2])):
            typ, data = self.expect_errors(c.c.uid, verb, str(uid),
                                           imap_quote(dst))
            if typ == "OK":
                self.move_expected(user, "INBOX", dst, ids, [uid],
                                   copy=verb == "COPY")
                self.stats[f"at the limit: {verb}"] += 1
                continue
            raise TestFailure(f"{user}: {verb} to {dst} at the limit: {typ} {data}")
        c.unselect()
        self.verify_user(user)

    def expunge_biggest(self, user, free_bytes, full):
        c = self.imap(user)
        ids = c.uid_map("INBOX")
        sizes = sorted(((len(self.corpus.data[m]), u) for u, m in ids.items()),
                       reverse=True)
        gone, freed = [], 0
        for sz, u in sizes:
            if freed >= free_bytes:
                break
            gone.append(u)
            freed += sz
        c.select("INBOX")
        c.ok(*c.c.uid("STORE", ",".join(map(str, gone)), "+FLAGS.SILENT",
                      r"(\Deleted)"), f"{user}: STORE \\Deleted at the limit")
        c.ok(*c.c.expunge(), f"{user}: EXPUNGE at the limit")
        c.unselect()
        for u in gone:
            self.expected[(user, "INBOX")][ids[u]] -= 1
        if self.fmt == "mdbox":
            self.purge_at_limit(user, full)
        self.stats["EXPUNGE at the limit"] += len(gone)

    def purge_at_limit(self, user, full):
        """mdbox frees expunged bytes only when `doveadm purge` rewrites the
        storage files: it copies each m.N file's surviving messages into a
        new file before deleting the old one, so it needs headroom of up to
        one file.  A full mailbox has none: the purge fails with EDQUOT (and
        changes nothing); the operator raises the full limit (`full` =
        (kind, name, limit)) by the largest storage file for the purge, then
        sets it back."""
        r = self.expect_errors(self.doveadm, "purge", "-u", user,
                               check_rc=False)
        if r.returncode == 0:
            self.stats["mdbox: purge at the limit"] += 1
            return
        check("Disk quota exceeded" in r.stderr, f"doveadm purge -u {user}: "
              f"rc={r.returncode} {r.stderr}")
        kind, name, limit = full
        headroom = max(self.mdbox_files(user).values())
        self.quota_set(kind, name, limit + headroom)
        self.doveadm("purge", "-u", user)
        self.quota_set(kind, name, limit)
        self.stats["mdbox: purge needed headroom (limit raised for it)"] += 1
        log(f"{user}: doveadm purge at the limit failed with EDQUOT (it "
            f"copies survivors first); with the {kind} limit raised by "
            f"{headroom} bytes (largest m.N) it freed the expunged bytes")

    def full_check(self, what, users):
        self.drop_connections()
        self.force_resync(users)
        for u in users:
            self.verify_user(u)
        log(f"{what}: consistent (doveadm force-resync, full read-back)")

    def phase_limits(self):
        t = time.monotonic()
        self.drop_connections()
        size = 200_000
        bob, alice, carol = "bob@example.com", "alice@example.org", "carol@example.org"
        dave, erin = "dave@example.com", "erin@example.net"

        # -- mailbox limit: bob@example.com --
        used = self.usage_of("mailboxes", bob)["used"]
        limit = used + 3 * size + size // 2
        self.quota_set("mailbox", bob, limit)
        check(self.usage_of("mailboxes", bob)["limit"] == limit,
              "quota set --mailbox: usage shows another limit")
        log(f"limit: {bob} used {used}, limit set to {limit}")
        n = self.deliver_until_refused(bob, others=[alice], size=size)
        check(n >= 2, f"{bob}: only {n} deliveries before the limit")
        log(f"{bob}: {n} accepted, then LMTP said {self.last_refusal!r}")
        e = self.usage_of("mailboxes", bob)
        check(e["used"] <= limit, f"{bob} used {e['used']} > limit {limit}")
        self.deliver([dave, carol, erin], 3000)   # same tenant, others
        self.deliver_until_refused(bob, others=[dave], size=size, max_n=1)
        self.full_check(f"{bob} at its limit", [bob])
        # full to the byte: what a full user can still do
        full = self.usage_of("mailboxes", bob)["used"]
        self.quota_set("mailbox", bob, full)
        self.at_limit_ops(bob)
        check(self.usage_of("mailboxes", bob)["used"] <= full
              + METADATA_GRACE, f"{bob}: over its limit by more than the grace")
        self.quota_set("mailbox", bob, limit)
        self.expunge_biggest(bob, 4 * size, ("mailbox", bob, limit))
        e = self.usage_of("mailboxes", bob)
        check(e["used"] + size < limit, f"{bob}: after EXPUNGE used "
              f"{e['used']} still near limit {limit}")
        self.deliver([bob], size)
        self.full_check(f"{bob} after EXPUNGE and a new delivery", [bob])
        log(f"mailbox limit: {self.refusal} for {bob} only; others kept receiving;"
            f" flags/CREATE/RENAME/SUBSCRIBE at the limit; EXPUNGE freed "
            f"space; delivery works again")

        # -- tenant limit: example.org --
        tenant = "example.org"
        tused = self.usage_of("tenants", tenant)["used"]
        tlimit = tused + 3 * size + size // 2
        self.quota_set("tenant", tenant, tlimit)
        log(f"limit: tenant {tenant} used {tused}, limit set to {tlimit}")
        n = self.deliver_until_refused(carol, others=[erin], size=size)
        check(n >= 2, f"{carol}: only {n} deliveries before the tenant limit")
        self.deliver_until_refused(alice, others=[dave], size=size, max_n=1)
        e = self.usage_of("tenants", tenant)
        check(e["used"] <= tlimit, f"tenant {tenant} used {e['used']} > "
              f"limit {tlimit}")
        self.full_check(f"tenant {tenant} at its limit", [carol, alice])
        full = self.usage_of("tenants", tenant)["used"]
        self.quota_set("tenant", tenant, full)
        self.at_limit_ops(alice)
        check(self.usage_of("tenants", tenant)["used"] <= full
              + METADATA_GRACE, f"{tenant}: over its limit by more than the "
              f"grace")
        self.quota_set("tenant", tenant, tlimit)
        self.expunge_biggest(carol, 4 * size, ("tenant", tenant, tlimit))
        self.deliver([carol], size)
        self.deliver([alice], 2000)
        self.full_check(f"tenant {tenant} after EXPUNGE", [carol, alice])
        log(f"tenant limit: {n} accepted, then {self.refusal} for every mailbox of "
            f"{tenant}; other tenants kept receiving; recovered after EXPUNGE "
            f"({time.monotonic() - t:.1f}s)")

    # ---- remount --------------------------------------------------------

    def phase_remount(self):
        self.stop_dovecot()
        before = self.check_usage_recount("before remount")
        ENV.unmount_spoolfs()
        check(not is_mounted(self.spool), "spoolfs still mounted")
        self.mount_spoolfs()
        after = self.check_usage_recount("after remount")
        key = lambda u: sorted((e["name"], e["used"]) for e in u["mailboxes"]
                               + u["tenants"])
        check(key(before) == key(after), f"remount changed usage: "
              f"{key(before)} -> {key(after)}")
        log("remount: usage rebuilt identical")
        self.start_dovecot()

    # ---- end ------------------------------------------------------------

    def check_dovecot_log(self):
        time.sleep(0.3)
        with open(self.dovecot_log, "rb") as f:
            text = f.read()
        bad, allowed, pos = [], [], 0
        for line in text.split(b"\n"):
            start, pos = pos, pos + len(line) + 1
            s = line.decode("utf-8", "replace")
            if not BAD_LOG_RE.search(s):
                continue
            inside = any(a <= start < b for a, b in self.log_windows)
            (allowed if inside else bad).append(s)
        if allowed:
            log(f"dovecot.log: {len(allowed)} error line(s) inside deliberate "
                f"over-limit operations, e.g. {allowed[0][:200]}")
        check(not bad, f"{len(bad)} error line(s) in {self.dovecot_log}:\n  "
              + "\n  ".join(bad[:20]))
        log("dovecot.log: no error outside the over-limit operations")

    def run(self):
        self.setup()
        self.phase_setup_folders()
        self.phase_deliver()
        self.verify_all("after delivery")
        self.phase_imap_ops()
        self.verify_all("after IMAP operations")
        if self.spoolfs_mode:
            self.check_usage_recount("after the IMAP operations")
            self.phase_limits()
            self.check_usage_recount("after the limits")
            self.phase_remount()
        self.drop_connections()
        self.force_resync(USERS)
        self.verify_all("at the end (after force-resync)")
        self.check_dovecot_log()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--format", choices=["maildir", "mdbox"], required=True)
    ap.add_argument("--backend", choices=["native", "spoolfs"],
                    default="spoolfs")
    ap.add_argument("--spoolfs-bin", default=None)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--tenant-limit", default="512M",
                    help="initial [tenants.\"example.org\"] limit (lowered "
                    "at run time)")
    ap.add_argument("--mailbox-limit", default="256M",
                    help="initial [mailboxes.\"bob@example.com\"] limit")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temp dir (configs, spool, logs)")
    ap.add_argument("--mount-options", default="", metavar="OPTS",
                    help="spoolfs -o options, e.g. 'noxattrs' (the "
                    "configuration the Dovecot how-to recommends)")
    ap.add_argument("--local-index", action="store_true",
                    help="Dovecot's INDEX and CONTROL outside the spool, on "
                    "the local filesystem (the Dovecot how-to's faster "
                    "layout)")
    args = ap.parse_args()
    if args.spoolfs_bin is None:
        args.spoolfs_bin = default_spoolfs_bin()
    else:
        args.spoolfs_bin = os.path.abspath(args.spoolfs_bin) \
            if os.sep in args.spoolfs_bin else shutil.which(args.spoolfs_bin)
    if os.geteuid() != 0:
        print("dovecot_e2e.py must run as root", file=sys.stderr)
        return 2

    atexit.register(ENV.cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    h = Harness(args)
    if args.mount_options:
        h.mount_options = ["-o", args.mount_options]
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
            for name in ("dovecot.log", "dovecot.out", "spoolfs.log"):
                p = os.path.join(ENV.tmp, name)
                if os.path.exists(p):
                    with open(p, errors="replace") as f:
                        tail = f.readlines()[-25:]
                    if tail:
                        print(f"--- last lines of {name} ---", file=sys.stderr)
                        sys.stderr.writelines(tail)
        h.drop_connections()
        ENV.cleanup()
    elapsed = time.monotonic() - T0
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(h.stats.items()))
    verdict = "PASS" if ok else "FAIL"
    print(f"\ndovecot_e2e {verdict}: format={args.format} "
          f"backend={args.backend} in {elapsed:.0f}s; {summary}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
