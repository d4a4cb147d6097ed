#!/usr/bin/env bash
# Debian packages the bed's real node and image builds need beyond Python and Go: runc (containerd's runtime;
# crun refuses this host's hybrid cgroups), the CNI plugins (bridge, host-local, loopback), iptables and
# conntrack (kube-proxy), buildah + mmdebstrap (our images and the base images no registry here serves),
# docker-registry (the local registry), gcc's static libc (the pause image), chromium + chromium-driver (the web
# console's browser test, headless). Installs only what is missing; needs root.
set -euo pipefail
pkgs=(runc containernetworking-plugins iptables conntrack buildah mmdebstrap docker-registry libc6-dev gcc uidmap
      chromium chromium-driver)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} = 0 ] && exit 0
echo "installing ${missing[*]} (the bed's node and image builds)"
sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo_ apt-get update -qq
$sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
