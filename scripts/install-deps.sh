#!/usr/bin/env bash
# Installs the servers tenantguard's tests and `make demo` run against, from
# Debian packages: clickhouse-server, clickhouse-client, postgresql (with
# pg_stat_statements), prometheus (with promtool) and prometheus-alertmanager.
# Idempotent: it does nothing when everything is present.
#
# The packages would start system-wide services (a ClickHouse on :9000, a
# Postgres on :5432, ...) that nothing here uses: tests and `tenantguard dev`
# start their own servers on free ports. So while apt-get installs, a
# /usr/sbin/policy-rc.d that answers 101 ("action forbidden") tells
# invoke-rc.d and deb-systemd-invoke not to start them; it is removed
# afterwards, on every exit path. An existing policy-rc.d is left as it is.
#
# DEPS_ROOT (default empty) prefixes every path the script checks or writes;
# the script's own test uses it to run without touching the system.
set -euo pipefail

root="${DEPS_ROOT:-}"
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$root$2" ]; }
have clickhouse-server /usr/bin/clickhouse-server || need+=(clickhouse-server)
have clickhouse-client /usr/bin/clickhouse-client || need+=(clickhouse-client)
ls "$root"/usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ls "$root"/usr/lib/postgresql/*/lib/pg_stat_statements.so >/dev/null 2>&1 || need+=(postgresql)
have prometheus /usr/bin/prometheus || need+=(prometheus)
have promtool /usr/bin/promtool || need+=(prometheus)
have prometheus-alertmanager /usr/bin/prometheus-alertmanager || need+=(prometheus-alertmanager)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: all servers present"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1
  fi
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q

policy="$root/usr/sbin/policy-rc.d"
if [ ! -e "$policy" ]; then
  trap '$sudo rm -f "$policy"' EXIT
  $sudo mkdir -p "$(dirname "$policy")"
  printf '#!/bin/sh\n# tenantguard install-deps: start no services while it installs.\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
fi
$sudo apt-get install -y -q --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
echo "install-deps: done"
