#!/usr/bin/env bash
# Installs the servers tenantguard's tests and `make demo` run against, from
# Debian packages: clickhouse-server, clickhouse-client, postgresql (with
# pg_stat_statements), prometheus (with promtool) and prometheus-alertmanager.
# Idempotent: it does nothing when everything is present.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ]; }
have clickhouse-server /usr/bin/clickhouse-server || need+=(clickhouse-server)
have clickhouse-client /usr/bin/clickhouse-client || need+=(clickhouse-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ls /usr/lib/postgresql/*/lib/pg_stat_statements.so >/dev/null 2>&1 || need+=(postgresql)
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
# policy-rc.d keeps the packages from starting system-wide services: tests
# and `tenantguard dev` start their own servers on free ports.
$sudo apt-get install -y -q --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u)
echo "install-deps: done"
