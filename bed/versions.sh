# Pinned versions of everything the test bed builds or downloads (shell syntax; read by bed/build.sh and kto_bed.paths).
K8S_VERSION=v1.36.3
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
