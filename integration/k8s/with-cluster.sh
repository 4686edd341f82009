#!/usr/bin/env bash
# Runs a command with the single-node test cluster up (internal/cmd/testcluster), then tears the
# cluster down whatever the command did. Builds or reuses, outside the clone and keyed by version:
# the cluster's binaries (build.sh), and the test images (the default image's root file system as
# test/plain:1 and test/python:1, keyed by the image's manifest). The command runs
# with K8S_CLUSTER (the cluster's directory, with cluster.json), TESTCLUSTER_BIN and K8S_AGENT_IMAGE
# set. Needs bin/boxlite-mcp and bin/boxlite-guest (make build) and the test image (make test-image).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
bin="$root/bin"
dir="${K8S_DIR:-/tmp/boxlite-k8s-test}"
home="${BOXLITE_TEST_HOME:-/var/tmp/boxlite-test-home}"
cache="${BOXLITE_K8S_CACHE:-/var/cache/boxlite-k8s}/images"
kbin="$(integration/k8s/build.sh)"
CGO_ENABLED=0 go build -o "$bin/testcluster" ./internal/cmd/testcluster
go build -o "$bin/testregistry" ./internal/cmd/testregistry
mkdir -p "$cache"
key="$(sha256sum "$home/images/default/manifest.json" | cut -c1-16)"
images="$cache/test-images-v2-$key.tar"
if [ ! -f "$images" ]; then
  rm -f "$cache"/test-images-*.tar
  echo "writing the k8s test images (cached as $images)" >&2
  "$bin/testregistry" -rootfs "$home/images/default/rootfs" -write-tar "$images"
fi
agent="$(mktemp /tmp/boxlite-agent-image-XXXXXX.tar)"
"$bin/boxlite-mcp" k8s agent-image --tag boxlite-agent:test --out "$agent" >/dev/null
"$bin/testcluster" down --dir "$dir" >/dev/null 2>&1 || true
trap '"$bin/testcluster" down --dir "$dir"; rm -f "$agent"' EXIT
"$bin/testcluster" up --dir "$dir" --bin "$kbin" --image "$images" --image "$agent" >/dev/null
K8S_CLUSTER="$dir" TESTCLUSTER_BIN="$bin/testcluster" K8S_AGENT_IMAGE=boxlite-agent:test "$@"
