#!/usr/bin/env bash
# Make sure the real tools the tests start are installed: PostgreSQL (initdb, pg_ctl) and a
# headless Chromium (screenshots of the drift report), a Prometheus Pushgateway (drift figures),
# Prometheus with promtool (config, alert rules, live scrape), Alertmanager with amtool (alert
# delivery), HAProxy (the load balancer in front of API replicas), shellcheck (workflow scripts)
# and Java 17+ (a local Spark for `emotitrack score --engine spark`: Spark 4 needs 17 or newer).
# Installs them with apt when running as root; otherwise says what to install and fails.
set -euo pipefail

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

missing=()
[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 \
  || missing+=(prometheus-alertmanager)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1; }
[ "$(java_major 2>/dev/null || echo 0)" -ge 17 ] 2>/dev/null || missing+=(openjdk-17-jre-headless)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts the services it installs; the tests start their own on free ports.
for service in prometheus prometheus-pushgateway prometheus-node-exporter prometheus-alertmanager \
  haproxy postgresql; do
  systemctl stop "$service" >/dev/null 2>&1 || service "$service" stop >/dev/null 2>&1 || true
done
