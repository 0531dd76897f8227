#!/bin/sh
# Installs what spoolfs needs on a Debian host, builds it, and installs the
# binary and the mount helper. Run as root from the repository.
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=""
command -v fusermount3 >/dev/null || need="$need fuse3"
command -v mkfs.ext4 >/dev/null || need="$need e2fsprogs"
# the etcd-client crate (cluster mode) compiles etcd's .proto files
command -v protoc >/dev/null || need="$need protobuf-compiler"
if [ -n "$need" ]; then
  apt-get update -qq
  apt-get install -y -qq $need
fi
cargo build --release
install -m 0755 target/release/spoolfs /usr/local/bin/spoolfs
install -m 0755 mount-scripts/mount.fuse.spoolfs /sbin/mount.fuse.spoolfs
echo "installed /usr/local/bin/spoolfs and /sbin/mount.fuse.spoolfs"
