#!/usr/bin/env bash
# Quick start, command 1: build Plexus and run it all-in-one on the embedded
# store (no etcd needed); with --demo, also build a demo tenant network of
# namespace pods and show them talking. Extra arguments go to `plexus serve`, e.g.
#   scripts/serve.sh --data /var/lib/plexus --listen 0.0.0.0:8470
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
# protoc builds the etcd client that the same binary carries.
ensure_packages protoc:protobuf-compiler /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev curl:curl ip:iproute2 ping:iputils-ping python3:python3
cargo build --release --bin plexus
if [ "${1:-}" != "--demo" ]; then
  exec target/release/plexus serve "$@"
fi
# --demo: serve on a scratch data dir, run scripts/demo.sh against it, and
# keep serving until Ctrl-C; everything is removed on exit.
shift
data=$(mktemp -d)
target/release/plexus serve --data "$data" "$@" &
serve=$!
trap 'kill $serve 2>/dev/null; wait $serve 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  curl -fs http://127.0.0.1:8470/healthz >/dev/null 2>&1 && break
  sleep 0.1
done
export PLEXUS_API=http://127.0.0.1:8470 PLEXUS_TOKEN
PLEXUS_TOKEN=$(cat "$data/admin.token")
PLEXUS_BIN=target/release/plexus scripts/demo.sh
echo "plexus keeps serving on $PLEXUS_API (token in $data/admin.token); Ctrl-C to stop"
wait $serve
