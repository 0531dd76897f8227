#!/bin/sh
# The project's test command: installs what the tests need (Debian
# packages), then runs the unit and integration tests (which mount spoolfs
# for real), the Cyrus IMAP and Dovecot end-to-end tests, the Debian
# package test and a benchmark smoke run.
# Needs root (mounts, loop devices, drop_caches). Usage: scripts/test.sh [--quick]
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

need=""
# etcd (server and etcdctl) for the cluster tests (tests/cluster.rs);
# protoc because the etcd-client crate compiles etcd's .proto files.
for pkg_cmd in fuse3:fusermount3 e2fsprogs:mkfs.ext4 util-linux:losetup \
  etcd-server:etcd etcd-client:etcdctl protobuf-compiler:protoc; do
  command -v "${pkg_cmd#*:}" >/dev/null 2>&1 || need="$need ${pkg_cmd%%:*}"
done
if [ -n "$need" ]; then
  apt-get update -qq
  apt-get install -y -qq $need
fi
modprobe fuse 2>/dev/null || true

# Every daemon a test starts serves over the transport SPOOLFS_IO_URING
# names: the suites run once over FUSE over io_uring (where the kernel has
# it: the module parameter is off by default) and once over /dev/fuse.
transports=off
uring=/sys/module/fuse/parameters/enable_uring
if [ -w "$uring" ] && echo Y > "$uring" 2>/dev/null; then
  transports="on off"
else
  echo "this kernel has no FUSE over io_uring: testing the /dev/fuse transport only"
fi

cargo build --release --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
failed=0
for transport in $transports; do
  echo "== cargo test, SPOOLFS_IO_URING=$transport"
  # Integration tests mount real filesystems; a few at a time keeps the
  # 2-core machine responsive.
  SPOOLFS_IO_URING=$transport cargo test --release -- --test-threads=4 2>&1 | tee "$log"
  # (a pipe hides cargo's status: a failed or uncompiled suite ends in "error:")
  [ "$(tail -n 1 "$log" | grep -c 'error')" -eq 0 ] || exit 1
  passed=$((passed + $(awk '/^test result:/ {p += $4} END {print p + 0}' "$log")))
  failed=$((failed + $(awk '/^test result:/ {f += $6} END {print f + 0}' "$log")))
done

if [ "${1:-}" != "--quick" ]; then
  for transport in $transports; do
    # uuid on the built-in defaults, legacy on the how-to's recommended
    # [mount] xattrs = false
    for layout in uuid legacy; do
      extra=""; [ "$layout" = legacy ] && extra="xattrs = false"
      echo "== Cyrus end to end, $layout layout, SPOOLFS_IO_URING=$transport${extra:+, $extra}"
      SPOOLFS_IO_URING=$transport python3 tests/cyrus/cyrus_e2e.py --layout "$layout" \
        --spool-backend spoolfs --spoolfs-bin "$PWD/target/release/spoolfs" \
        --mount-toml "$extra"
      passed=$((passed + 1))
    done
    echo "== Cyrus end to end, uuid layout, metadata on a metapartition, SPOOLFS_IO_URING=$transport"
    SPOOLFS_IO_URING=$transport python3 tests/cyrus/cyrus_e2e.py --layout uuid \
      --spool-backend spoolfs --spoolfs-bin "$PWD/target/release/spoolfs" --metapartition
    passed=$((passed + 1))
  done
  # Dovecot 2.3 (LMTP + IMAP, virtual users) on a pattern layout, both of
  # its common storage formats; installs dovecot-* itself if missing
  for transport in $transports; do
    # maildir on the defaults, mdbox with the how-to's recommended noxattrs
    for format in maildir mdbox; do
      extra=""; [ "$format" = mdbox ] && extra="noxattrs"
      echo "== Dovecot end to end, $format, SPOOLFS_IO_URING=$transport${extra:+, -o $extra}"
      SPOOLFS_IO_URING=$transport python3 tests/dovecot/dovecot_e2e.py --format "$format" \
        --backend spoolfs --spoolfs-bin "$PWD/target/release/spoolfs" \
        --mount-options "$extra"
      passed=$((passed + 1))
    done
    echo "== Dovecot end to end, maildir, INDEX and CONTROL outside the spool, SPOOLFS_IO_URING=$transport"
    SPOOLFS_IO_URING=$transport python3 tests/dovecot/dovecot_e2e.py --format maildir \
      --backend spoolfs --spoolfs-bin "$PWD/target/release/spoolfs" --local-index
    passed=$((passed + 1))
  done
  # The Debian package: build, dpkg -i, mount through fstab, man -w,
  # dpkg -r / --purge (installs man-db if missing).
  sh tests/package/package_test.sh
  passed=$((passed + 1))
  cargo build --release --manifest-path bench/Cargo.toml
  bench/target/release/spoolfs-bench --scale tiny --runs 1 --targets native,spoolfs \
    --spoolfs-bin "$PWD/target/release/spoolfs" --fs ext4 --fs-size 4G
  # the real-daemon benchmark, small, so that it cannot rot
  # (on a fresh ext4 loop image, so that --fs cannot rot either)
  python3 bench/cyrus_bench.py --rounds 1 --messages 60 --mailboxes 12 --domains 3 \
    --spoolfs-bin "$PWD/target/release/spoolfs" --fs ext4 --fs-size 2G
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
