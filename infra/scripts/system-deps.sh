#!/usr/bin/env bash
# Install the Debian packages the stack needs, only where they are missing: Redis
# (redis-server, redis-tools for redis-cli and redis-benchmark), PostgreSQL, kcat, a Java
# runtime and Maven for Apache Kafka, and any extra packages named as arguments ("postgis" for
# PostGIS matching the installed PostgreSQL).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
ls /etc/postgresql/*/main >/dev/null 2>&1 || missing+=(postgresql)
# "postgis": PostGIS for the installed PostgreSQL's major version (or Debian's default one).
postgis_pkg() {
  local v
  v=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  if [ -n "$v" ]; then echo "postgresql-$v-postgis-3"; else echo postgresql-postgis; fi
}
for pkg in "$@"; do
  [ "$pkg" = postgis ] && pkg=$(postgis_pkg)
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
# A Debian package may start its own service; the stack starts what it needs on the ports its
# settings name, so stop the packaged Redis rather than leave a second one running.
if [[ " ${missing[*]} " == *" redis-server "* ]]; then
  $SUDO redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
fi
