"""What the Cyrus and the Dovecot end-to-end tests share: logging and
checks, process and mount probes, package and port helpers, the LMTP client
and the test messages' id header.  Standard library only; imported by
tests/cyrus/cyrus_e2e.py, tests/dovecot/dovecot_e2e.py and the benchmarks
built on them.
"""

import base64
import errno
import hashlib
import imaplib
import os
import random
import re
import shutil
import socket
import subprocess
import time

T0 = time.monotonic()
ID_RE = re.compile(rb"^X-E2E-Id: (\S+)\r?$", re.M)


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def imap_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pgroup_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def is_mounted(path, fstype=None):
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            mp = fields[1].replace("\\040", " ")
            if mp == path and (fstype is None or fields[2] == fstype):
                return True
    return False


def wait_for_spoolfs(proc, spool, log_path, xattrs=True):
    """Waits (30 s at most) for `proc`'s mount to appear on `spool`, then
    checks that it serves extended attributes exactly when `xattrs` says:
    a configuration the test asks for and the daemon ignored fails here."""
    deadline = time.monotonic() + 30
    while not is_mounted(spool, "fuse.spoolfs"):
        if proc.poll() is not None:
            raise TestFailure(f"spoolfs mount exited rc={proc.returncode}; "
                              f"see {log_path}")
        check(time.monotonic() < deadline,
              "spoolfs mount did not appear in /proc/mounts in 30 s")
        time.sleep(0.05)
    try:
        os.listxattr(spool)
        served = True
    except OSError as e:
        check(e.errno == errno.EOPNOTSUPP, f"listxattr {spool}: {e}")
        served = False
    check(served == xattrs, f"{spool}: extended attributes served: {served}, "
          f"configured: {xattrs}")
    log(f"spoolfs mounted at {spool} (pid {proc.pid}, xattrs {'on' if xattrs else 'off'})")


def on_signal(signum, frame):
    raise SystemExit(128 + signum)


_HANDED_OUT = set()


def free_port():
    """A free port on 127.0.0.1, never one this process handed out
    before: the kernel may give the same ephemeral port to two binds in a
    row once the first socket is closed, and a daemon then refuses its
    configuration (Dovecot: `duplicate listener`, seen in CI)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def pkg_installed(name):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name],
                       capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


class LMTPError(Exception):
    pass


class LMTP:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=120)
        self.f = self.sock.makefile("rb")
        code, lines = self.reply()
        if code != 220:
            raise LMTPError(f"LMTP greeting: {code} {lines}")
        self.cmd("LHLO e2e.test", 250)

    def reply(self):
        lines = []
        while True:
            line = self.f.readline()
            if not line:
                raise LMTPError("LMTP connection closed")
            line = line.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, text, expect=None):
        self.sock.sendall(text.encode() + b"\r\n")
        code, lines = self.reply()
        if expect is not None and code != expect:
            raise LMTPError(f"LMTP {text!r}: {code} {' '.join(lines)}")
        return code, lines

    def send(self, sender, rcpts, data):
        """Returns {rcpt: (code, text)}."""
        results = {}
        self.cmd(f"MAIL FROM:<{sender}>", 250)
        accepted = []
        for r in rcpts:
            code, lines = self.cmd(f"RCPT TO:<{r}>")
            if code == 250:
                accepted.append(r)
            else:
                results[r] = (code, " ".join(lines))
        if not accepted:
            self.cmd("RSET", 250)
            return results
        self.cmd("DATA", 354)
        body = data
        if body.startswith(b"."):
            body = b"." + body
        body = body.replace(b"\r\n.", b"\r\n..")
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.sock.sendall(body + b".\r\n")
        for r in accepted:
            code, lines = self.reply()
            results[r] = (code, " ".join(lines))
        return results

    def close(self):
        try:
            self.cmd("QUIT")
        except Exception:  # noqa: BLE001
            pass
        self.sock.close()


def message_id_of(raw):
    m = ID_RE.search(raw[:65536])
    return m.group(1).decode() if m else None


def default_spoolfs_bin():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for p in (f"{repo}/target/release/spoolfs", f"{repo}/target/debug/spoolfs"):
        if os.access(p, os.X_OK):
            return p
    return shutil.which("spoolfs") or f"{repo}/target/release/spoolfs"


class Corpus:
    """Seeded test messages: each daemon's test names its sender, subject
    and largest size as class attributes."""
    SENDER = "sender@example.net"
    SUBJECT = "spoolfs e2e message"
    BIG_MAX = 5 << 20

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.seed = seed
        self.data = {}   # id -> bytes as sent / appended
        self.sha = {}    # id -> sha256 hex
        self.n = 0

    def size(self):
        r = self.rng.random()
        if r < 0.02:
            return self.rng.randint(1 << 20, self.BIG_MAX)
        if r < 0.60:
            return self.rng.randint(300, 4000)
        return self.rng.randint(4000, 50_000)

    def make(self, to, size=None, prefix="M"):
        self.n += 1
        mid = f"{prefix}{self.n}"
        if size is None:
            size = self.size()
        hdr = (f"From: E2E Sender <{self.SENDER}>\r\n"
               f"To: {', '.join(to)}\r\n"
               f"Subject: {self.SUBJECT} {mid}\r\n"
               f"Message-ID: <{mid}.{self.seed}@e2e.test>\r\n"
               f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
               f"X-E2E-Id: {mid}\r\n"
               f"MIME-Version: 1.0\r\n"
               f"Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
        need = max(size - len(hdr), 10)
        raw = base64.b64encode(self.rng.randbytes(need * 3 // 4 + 3))[:need]
        lines = [raw[i:i + 76] for i in range(0, len(raw), 76)]
        msg = hdr + b"\r\n".join(lines) + b"\r\n"
        self.data[mid] = msg
        self.sha[mid] = hashlib.sha256(msg).hexdigest()
        return mid, msg


class Imap:
    """An IMAP session as one user, on 127.0.0.1."""

    def __init__(self, port, user, password):
        self.user = user
        self.c = imaplib.IMAP4("127.0.0.1", port)
        self.c.login(user, password)
        self.selected = None

    def ok(self, typ, data, what):
        if typ != "OK":
            raise TestFailure(f"IMAP {self.user}: {what}: {typ} {data}")
        return data

    def select(self, folder, readonly=False):
        if self.selected == (folder, readonly):
            return
        typ, data = self.c.select(imap_quote(folder), readonly=readonly)
        self.ok(typ, data, f"SELECT {folder}")
        self.selected = (folder, readonly)

    def unselect(self):
        if self.selected:
            self.c.close()
            self.selected = None

    def uids(self, folder):
        self.select(folder, readonly=True)
        typ, data = self.c.uid("SEARCH", None, "ALL")
        self.ok(typ, data, f"UID SEARCH {folder}")
        return [int(x) for x in data[0].split()]

    def uid_map(self, folder):
        """{uid: message id} via a header fetch."""
        self.select(folder, readonly=True)
        typ, data = self.c.uid("FETCH", "1:*",
                               "(UID BODY.PEEK[HEADER.FIELDS (X-E2E-Id)])")
        self.ok(typ, data, f"FETCH ids in {folder}")
        out = {}
        for uid, body in self.by_uid(data, folder):
            mid = message_id_of(body)
            check(mid, f"{self.user} {folder}: no X-E2E-Id in {body!r:.200}")
            out[uid] = mid
        return out

    def by_uid(self, data, folder):
        """(uid, fetched bytes) for each message of a UID FETCH answer."""
        for d in data:
            if not isinstance(d, tuple):
                continue
            m = re.search(rb"UID (\d+)", d[0])
            check(m is not None, f"{self.user} {folder}: unexpected FETCH "
                  f"response {d[0]!r:.200}")
            yield int(m.group(1)), d[1]

    def fetch_all(self, folder):
        """{uid: raw bytes}"""
        uids = self.uids(folder)
        if not uids:
            return {}
        typ, data = self.c.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        self.ok(typ, data, f"UID FETCH 1:* in {folder}")
        out = dict(self.by_uid(data, folder))
        check(sorted(out) == uids, f"{self.user} {folder}: FETCH returned "
              f"uids {sorted(out)[:20]} for {uids[:20]}")
        return out

    def logout(self):
        try:
            self.c.logout()
        except Exception:  # noqa: BLE001
            pass
