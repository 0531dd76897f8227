#!/bin/sh
# The Debian package, end to end, on this machine (as root; run by
# scripts/test.sh in full mode):
#   build it (scripts/package.sh), dpkg -i, mount through an fstab line with
#   the installed helper (`mount MOUNTPOINT`), check the daemon is the
#   packaged /usr/bin/spoolfs, `man -w` the pages, unmount, dpkg -r and find
#   nothing of the package left but its conffiles, dpkg --purge and find
#   those gone too.
# Whatever happens, the trap unmounts, purges the package, restores
# /etc/fstab and a mount helper that was there before (mount-scripts/setup.sh
# or tests/fstab.rs install one). A /usr/local/bin/spoolfs from setup.sh may
# exist: the packaged helper runs /usr/bin/spoolfs regardless.
set -eu
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive
[ "$(id -u)" -eq 0 ] || { echo "package test: needs root" >&2; exit 1; }

fail() {
  echo "package test: FAILED: $*" >&2
  exit 1
}

# man-db for `man -w`, logrotate to check the logrotate file; fuse3 is the
# package's dependency (dpkg -i does not fetch dependencies).
need=""
dpkg -s man-db >/dev/null 2>&1 || need="$need man-db"
dpkg -s logrotate >/dev/null 2>&1 || need="$need logrotate"
dpkg -s fuse3 >/dev/null 2>&1 || need="$need fuse3"
if [ -n "$need" ]; then
  apt-get update -qq
  apt-get install -y -qq $need
fi

# A package left installed by a run of this test that was killed is
# purged; one installed by anyone else is not ours to remove.
marker=/run/spoolfs-package-test.installed
if dpkg -s spoolfs >/dev/null 2>&1; then
  [ -e "$marker" ] || fail "the spoolfs package is installed; this test would remove it"
  dpkg --purge spoolfs >/dev/null
fi

scripts/package.sh
version=$(dpkg-deb -f "$(ls -t target/debian/spoolfs_*.deb | head -n 1)" Version)
deb=$(ls -t target/debian/spoolfs_"$version"_*.deb | head -n 1)

tmp=$(mktemp -d /tmp/spoolfs-package-test.XXXXXX)
mnt=$tmp/mnt
mkdir -p "$tmp/fast" "$tmp/slow" "$mnt" "$tmp/saved"
cp /etc/fstab "$tmp/saved/fstab"
helper=/sbin/mount.fuse.spoolfs
[ -e "$helper" ] && cp -p "$helper" "$tmp/saved/helper"

cleanup() {
  status=$?
  set +e
  if awk -v m="$mnt" '$2 == m {f=1} END {exit !f}' /proc/mounts; then
    umount "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  cp "$tmp/saved/fstab" /etc/fstab
  if dpkg -s spoolfs >/dev/null 2>&1 || dpkg -l spoolfs 2>/dev/null | grep -q '^rc'; then
    dpkg --purge spoolfs >/dev/null
  fi
  rm -f "$marker"
  [ -e "$tmp/saved/helper" ] && [ ! -e "$helper" ] && cp -p "$tmp/saved/helper" "$helper"
  rm -rf "$tmp"
  [ $status -eq 0 ] || echo "package test: cleaned up after a failure" >&2
  exit $status
}
trap cleanup EXIT INT TERM

touch "$marker"
dpkg -i "$deb"
dpkg -L spoolfs >"$tmp/files"
conffiles="/etc/spoolfs/spoolfs.toml /etc/logrotate.d/spoolfs"

# What the package must have installed.
for f in /usr/bin/spoolfs /sbin/mount.fuse.spoolfs; do
  [ -x "$f" ] || fail "$f is not installed or not executable"
done
for f in /usr/lib/systemd/system/spoolfs.service $conffiles \
  /usr/share/bash-completion/completions/spoolfs /usr/share/zsh/vendor-completions/_spoolfs; do
  [ -f "$f" ] || fail "$f is not installed"
done
for f in $conffiles; do
  grep -qx "$f" /var/lib/dpkg/info/spoolfs.conffiles || fail "$f is not a conffile"
done
unit=/usr/lib/systemd/system/spoolfs.service
grep -q '^ExecStart=/usr/bin/spoolfs ' "$unit" || fail "the unit does not run /usr/bin/spoolfs"
grep -q '^Type=notify$' "$unit" || fail "the unit is not Type=notify"
for doc in $(sed -n 's/^Documentation=//p' "$unit"); do
  case $doc in
    file://*) [ -f "${doc#file://}" ] || fail "the unit names $doc, which is not installed" ;;
  esac
done
/usr/bin/spoolfs --version
logrotate -d /etc/logrotate.d/spoolfs >"$tmp/logrotate.out" 2>&1 ||
  fail "logrotate rejects /etc/logrotate.d/spoolfs: $(cat "$tmp/logrotate.out")"
grep -q 'rotating pattern: /var/log/spoolfs.log' "$tmp/logrotate.out" ||
  fail "logrotate does not see /var/log/spoolfs.log: $(cat "$tmp/logrotate.out")"

# Mount through an fstab line with the installed helper.
cat >"$tmp/spoolfs.toml" <<EOF
[partitions]
fast = "$tmp/fast"
slow = "$tmp/slow"
[[route]]
match = "archive/**"
partition = "slow"
[control]
state_dir = "$tmp/state"
EOF
/usr/bin/spoolfs check --config "$tmp/spoolfs.toml" >/dev/null
echo "$tmp/spoolfs.toml $mnt fuse.spoolfs defaults,allow_other 0 0" >>/etc/fstab
env -u SPOOLFS_BIN SPOOLFS_LOG="$tmp/daemon.log" mount "$mnt" ||
  fail "mount $mnt through fstab; log: $(cat "$tmp/daemon.log" 2>/dev/null)"
awk -v m="$mnt" '$2 == m && $3 == "fuse.spoolfs" {f=1} END {exit !f}' /proc/mounts ||
  fail "$mnt is not mounted as fuse.spoolfs"
daemon_exe=""
for pid in $(pgrep -x spoolfs); do
  if tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q " $mnt"; then
    daemon_exe=$(readlink "/proc/$pid/exe")
  fi
done
[ "$daemon_exe" = /usr/bin/spoolfs ] || fail "the daemon runs '$daemon_exe', not /usr/bin/spoolfs"
mkdir -p "$mnt/archive/x"
echo hello >"$mnt/archive/x/m"
[ "$(cat "$tmp/slow/archive/x/m")" = hello ] || fail "a file written through the mount is not on its partition"

man -w spoolfs | grep -qx /usr/share/man/man8/spoolfs.8.gz || fail "man -w spoolfs: $(man -w spoolfs 2>&1)"
man -w 5 spoolfs.toml | grep -qx /usr/share/man/man5/spoolfs.toml.5.gz || fail "man -w 5 spoolfs.toml"
man -w spoolfs-mount >/dev/null || fail "man -w spoolfs-mount"

umount "$mnt"
i=0
while pgrep -f "spoolfs mount .* $mnt\$" >/dev/null; do
  i=$((i + 1))
  [ $i -lt 200 ] || fail "the daemon did not exit after umount"
  sleep 0.1
done
cp "$tmp/saved/fstab" /etc/fstab

# dpkg -r: nothing of the package left but its conffiles.
dpkg -r spoolfs
dpkg -l spoolfs | grep -q '^rc' || fail "after dpkg -r the package is not in state rc"
left=""
while read -r f; do
  [ -d "$f" ] && continue
  if [ -e "$f" ] || [ -L "$f" ]; then
    case " $conffiles " in
      *" $f "*) ;;
      *) left="$left $f" ;;
    esac
  fi
done <"$tmp/files"
[ -z "$left" ] || fail "left behind by dpkg -r:$left"
for f in $conffiles; do
  [ -f "$f" ] || fail "dpkg -r removed the conffile $f"
done
[ -d /usr/share/doc/spoolfs ] && fail "dpkg -r left /usr/share/doc/spoolfs"

# dpkg --purge: the conffiles go too.
dpkg --purge spoolfs
for f in $conffiles /etc/spoolfs; do
  [ -e "$f" ] && fail "left behind by dpkg --purge: $f"
done
dpkg -s spoolfs >/dev/null 2>&1 && fail "spoolfs still known to dpkg after --purge"
rm -f "$marker"
echo "package test: passed"
