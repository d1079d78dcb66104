#!/usr/bin/env bash
# Installs the local services the integration tests run for real (Debian packages).
# Idempotent; a no-op when everything is present. Never starts anything: tests start and stop by PID.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || [ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "install-services: missing ${need[*]}; run as root or install them (tests that need them will skip)" >&2
  exit 0
fi
echo "install-services: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's packages may start their daemons; the tests run their own instances.
for svc in mosquitto prometheus prometheus-alertmanager prometheus-node-exporter nats-server; do
  (service "$svc" stop || true) >/dev/null 2>&1
done
