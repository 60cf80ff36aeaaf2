#!/usr/bin/env bash
# Quick start, command 1: build Plexus and run it all-in-one on the embedded
# store (no etcd needed). Extra arguments go to `plexus serve`, e.g.
#   scripts/serve.sh --data /var/lib/plexus --listen 0.0.0.0:8470
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# protoc builds the etcd client that the same binary carries.
ensure_packages protoc:protobuf-compiler
cargo build --release --bin plexus
exec target/release/plexus serve "$@"
