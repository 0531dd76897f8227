#!/bin/sh
# Builds the Debian package: target/debian/spoolfs_<version>-1_<arch>.deb.
# Installs cargo-deb (from crates.io) if missing, generates the man pages
# and shell completions from their sources (examples/gen-docs.rs), makes
# the packaged mount helper (which runs /usr/bin/spoolfs), then runs
# `cargo deb`. Usage: scripts/package.sh
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb
# the etcd-client crate (cluster mode) compiles etcd's .proto files
if ! command -v protoc >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler
fi

out=target/packaging
rm -rf "$out"
mkdir -p "$out"
cargo run --quiet --release --example gen-docs -- "$out"
gzip -9n "$out"/man/*.[58]
# The packaged helper runs the packaged binary, whatever else is on PATH
# (mount-scripts/setup.sh may have installed /usr/local/bin/spoolfs).
sed 's|^bin=.*|bin=${SPOOLFS_BIN:-/usr/bin/spoolfs}|' mount-scripts/mount.fuse.spoolfs >"$out/mount.fuse.spoolfs"
grep -q '^bin=${SPOOLFS_BIN:-/usr/bin/spoolfs}$' "$out/mount.fuse.spoolfs"

cargo deb
