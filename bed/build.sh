#!/usr/bin/env bash
# Builds the real Kubernetes binaries (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kubelet, kube-proxy) from the Go module k8s.io/kubernetes, MinIO, containerd and CoreDNS from their Go
# modules, at the versions pinned in bed/versions.sh. Binaries are cached under ~/.cache/kto-bed/<component>-<version>/
# so a second run only checks they exist.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
cache=${KTO_BED_CACHE:-$HOME/.cache/kto-bed}
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
jobs=${KTO_BUILD_JOBS:-2}

build_k8s() {
  local out="$cache/k8s-$K8S_VERSION"
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  local missing=()
  for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} = 0 ] && { echo "k8s $K8S_VERSION: cached in $out"; return; }
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local staging="v0.${K8S_VERSION#v1.}"
  go mod download k8s.io/kubernetes@"$K8S_VERSION"
  local kmod; kmod=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/go.mod
  {
    echo "module ktobed/k8s"
    echo "go 1.25"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo "replace ("
    # k8s.io/kubernetes points its staging modules at ./staging; a dependent module must pin them to
    # the published tags of the same release instead.
    sed -n 's#^\t\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\t\1 => \1 '"$staging"'#p' "$kmod"
    echo ")"
  } > "$work/go.mod"
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  [ -d "$out" ] && cp -a "$out/." "$out.tmp/"
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  for b in "${missing[@]}"; do
    local t0=$SECONDS
    (cd "$work" && go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$out.tmp/$b" "k8s.io/kubernetes/cmd/$b")
    echo "built $b $K8S_VERSION in $((SECONDS - t0)) s"
  done
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_minio() {
  local out="$cache/minio-$MINIO_VERSION"
  [ -x "$out/minio" ] && { echo "minio $MINIO_VERSION: cached in $out"; return; }
  local t0=$SECONDS
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  echo "built minio $MINIO_VERSION in $((SECONDS - t0)) s"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_containerd() {
  local out="$cache/containerd-$CONTAINERD_VERSION"
  [ -x "$out/containerd" ] && [ -x "$out/containerd-shim-runc-v2" ] && [ -x "$out/ctr" ] && {
    echo "containerd $CONTAINERD_VERSION: cached in $out"; return; }
  local t0=$SECONDS
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  local mod=github.com/containerd/containerd/v2
  local ldflags="-s -w -X $mod/version.Version=$CONTAINERD_VERSION -X $mod/version.Package=$mod"
  # No btrfs/devmapper/zfs snapshotters (their C headers are not here); the bed uses overlayfs.
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    CGO_ENABLED=$([ $cmd = containerd-shim-runc-v2 ] && echo 0 || echo 1) GOBIN="$out.tmp" \
      go install -p "$jobs" -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "$ldflags" \
      "$mod/cmd/$cmd@$CONTAINERD_VERSION"
  done
  echo "built containerd $CONTAINERD_VERSION in $((SECONDS - t0)) s"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_coredns() {
  local out="$cache/coredns-$COREDNS_VERSION"
  [ -x "$out/coredns" ] && { echo "coredns $COREDNS_VERSION: cached in $out"; return; }
  local t0=$SECONDS
  rm -rf "$out.tmp"; mkdir -p "$out.tmp"
  # Static: it runs in an image FROM scratch.
  CGO_ENABLED=0 GOBIN="$out.tmp" go install -p "$jobs" -trimpath -ldflags "-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
  echo "built coredns $COREDNS_VERSION in $((SECONDS - t0)) s"
  rm -rf "$out" && mv "$out.tmp" "$out"
}

mkdir -p "$cache"
case "${1:-all}" in
  k8s) build_k8s ;;
  minio) build_minio ;;
  containerd) build_containerd ;;
  coredns) build_coredns ;;
  all) build_k8s; build_minio; build_containerd; build_coredns ;;
  *) echo "usage: $0 [k8s|minio|containerd|coredns|all]" >&2; exit 2 ;;
esac
