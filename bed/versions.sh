# Pinned versions of everything the test bed builds or downloads (shell syntax; read by bed/build.sh and kto_bed.paths).
K8S_VERSION=v1.36.3
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
# The kubelet of v1.36 supports containerd 2.x only (1.35 was the last release for containerd 1.x, Debian's 1.6).
CONTAINERD_VERSION=v2.4.2
COREDNS_VERSION=v1.15.0
