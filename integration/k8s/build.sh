#!/usr/bin/env bash
# Builds the test cluster's binaries (kube-apiserver, kubelet, kube-scheduler, etcd) from the Go
# module proxy into a cache outside the clone, keyed by version, and prints the directory. A second
# run with the binaries present does nothing. About 10 minutes on 2 cores the first time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
cache="${BOXLITE_K8S_CACHE:-/var/cache/boxlite-k8s}/kube-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
mkdir -p "$cache"
# The Kubernetes binaries report their version (node info, /version) from these variables.
minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
kube_x="-X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
build() { # module-dir package output [extra ldflags]
  if [ -x "$cache/$3" ]; then return; fi
  echo "building $3 into $cache (cached afterwards)" >&2
  (cd "$here/build/$1" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags="-s -w ${4:-}" -o "$cache/$3.tmp" "./$2")
  mv "$cache/$3.tmp" "$cache/$3"
}
build etcd etcd etcd
build kube kube-apiserver kube-apiserver "$kube_x"
build kube kube-scheduler kube-scheduler "$kube_x"
build kube kubelet kubelet "$kube_x"
echo "$cache"
