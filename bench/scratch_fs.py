"""A fresh filesystem for one benchmark run, shared by every target.

The host's own filesystem carries history that moves results between runs:
on a journal-less ext4 (as some VM images are), every new inode scans past
the inodes deleted in the last 60-300 s (`recently_deleted` in ext4's
allocator), so what ran a minute before changes how fast the next file is
created, for native and spoolfs alike. A mail spool also never runs on such
a filesystem. `--fs ext4` (or `xfs`) puts the whole run, native directory
and spoolfs partitions alike, on a new journaled filesystem in a loop image,
made before the first round and removed after the last.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile

KINDS = ("host", "ext4", "xfs")
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"]}
PACKAGE = {"ext4": "e2fsprogs", "xfs": "xfsprogs"}


def add_argument(ap):
    ap.add_argument("--fs", choices=KINDS, default="host",
                    help="where the run works: 'host' (the directory tempfile "
                    "picks, default), or a fresh journaled 'ext4' / 'xfs' "
                    "loop image for this run only (see bench/scratch_fs.py)")
    ap.add_argument("--fs-size", default="16G",
                    help="size of the --fs image (sparse; default 16G)")


def ensure_mkfs(kind, say):
    """Installs the mkfs `kind` needs if it is missing, as the benchmarks
    install the daemons they run."""
    if shutil.which(MKFS[kind][0]) is not None:
        return
    say(f"installing {PACKAGE[kind]} for {MKFS[kind][0]}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE[kind]]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"--fs {kind}: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    if shutil.which(MKFS[kind][0]) is None:
        raise SystemExit(f"--fs {kind}: {PACKAGE[kind]} installed no {MKFS[kind][0]}")


def must(cmd, what):
    """Runs `cmd`; a failure ends the run with what failed and why."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{what}: {' '.join(cmd)} failed: "
                         f"{(r.stderr or r.stdout).strip()}")


@contextlib.contextmanager
def scratch_filesystem(kind, size, say):
    """Runs the body with `tempfile` working on a new `kind` filesystem
    (nothing changes for 'host')."""
    if kind == "host":
        yield None
        return
    ensure_mkfs(kind, say)
    work = tempfile.mkdtemp(prefix=f"bench-{kind}-", dir="/var/tmp")
    os.chmod(work, 0o755)  # the daemons' users (cyrus, vmail) pass through
    image, mnt = os.path.join(work, "fs.img"), os.path.join(work, "mnt")
    os.mkdir(mnt)
    mounted = False
    try:
        must(["truncate", "-s", size, image], f"--fs-size {size!r}")
        must(MKFS[kind] + [image], f"--fs {kind}")
        must(["mount", "-o", "loop", image, mnt], f"--fs {kind} (loop devices?)")
        mounted = True
        os.chmod(mnt, 0o1777)  # as /tmp: the daemons' users make files here
        say(f"working on a fresh {kind} image ({size}) mounted at {mnt}")
        previous, tempfile.tempdir = tempfile.tempdir, mnt
        try:
            yield mnt
        finally:
            tempfile.tempdir = previous
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)
        if os.path.ismount(mnt):
            # something still holds it (a mount left inside): never
            # recurse into a live filesystem; leave it for the operator
            say(f"NOT removing {work}: {mnt} is still mounted")
        else:
            shutil.rmtree(work, ignore_errors=True)
