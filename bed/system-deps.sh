#!/usr/bin/env bash
# System packages the bed needs beyond Python and Go: MariaDB's server plays the platform's MySQL image
# (bed/kto_bed/programs/mysqld_local.py). Installs only what is missing; needs root (or sudo) once.
set -euo pipefail
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] && exit 0
echo "installing mariadb-server (the bed's stand-in for the platform's MySQL image)"
sudo_=""; [ "$(id -u)" = 0 ] || sudo_="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo_ apt-get update -qq
$sudo_ apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null
