"""What the Cyrus and the Dovecot end-to-end tests share: logging and
checks, process and mount probes, package and port helpers, the LMTP client
and the test messages' id header.  Standard library only; imported by
tests/cyrus/cyrus_e2e.py, tests/dovecot/dovecot_e2e.py and the benchmarks
built on them.
"""

import os
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


def on_signal(signum, frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
