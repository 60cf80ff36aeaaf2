#!/usr/bin/env bash
# Quick start, command 2: install what the tests need, check the Kubernetes
# manifests (scripts/check-manifests.sh), formatting and lints, then run
# the whole test suite (unit, conformance on the embedded store and on a
# real etcd, end-to-end). .ci/run calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ensure_packages \
  protoc:protobuf-compiler \
  /usr/include/google/protobuf/descriptor.proto:libprotobuf-dev \
  etcd:etcd-server \
  etcdctl:etcd-client \
  ip:iproute2 \
  iperf3:iperf3 \
  ping:iputils-ping \
  openssl:openssl \
  curl:curl \
  traceroute:traceroute \
  tracepath:iputils-tracepath \
  dot:graphviz \
  chromium:chromium \
  tshark:tshark \
  podman:podman \
  runc:runc \
  /usr/bin/busybox:busybox-static \
  /usr/lib/cni/macvlan:containernetworking-plugins \
  /usr/lib/cni/static:containernetworking-plugins \
  python3:python3 \
  nc:netcat-openbsd
scripts/check-manifests.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
