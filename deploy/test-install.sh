#!/usr/bin/env bash
# Installs the .deb on this machine, checks what the package promises and
# removes it again: the user and the data directory exist, the installed
# binary runs as that user on the packaged configuration and answers health
# checks, and purge leaves nothing behind. Needs root (it installs a
# package); where systemd runs, postinst also starts the service.
# Usage: deploy/test-install.sh [BINARY]   (default: build-deb.sh's, the lean build)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$(id -u)" -ne 0 ]; then echo "test-install: needs root" >&2; exit 2; fi
if dpkg -s edge-gateway >/dev/null 2>&1; then
  echo "test-install: edge-gateway is installed on this machine already; not touching it" >&2; exit 2
fi
out="$(mktemp -d)"
trap 'dpkg --purge edge-gateway >/dev/null 2>&1 || true; rm -rf "$out"' EXIT
deb="$(DEB_COMPRESSION=gzip "$here/build-deb.sh" "${1:-}" "$out")"
dpkg -i "$deb" >/dev/null
id edge-gateway >/dev/null
test -d /var/lib/edge-gateway
test "$(stat -c %U /var/lib/edge-gateway)" = edge-gateway
/usr/bin/edge-gateway config check /etc/edge-gateway/gateway.toml >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
if [ -d /run/systemd/system ]; then
  systemctl stop edge-gateway.service || true
fi
GATEWAY__API__BIND="127.0.0.1:$port" runuser -u edge-gateway -- \
  /usr/bin/edge-gateway run --config /etc/edge-gateway/gateway.toml --data-dir /var/lib/edge-gateway \
  >"$out/log" 2>&1 &
pid=$!
ok=
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/api/v1/system/health" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.2
done
kill -TERM "$pid"; wait "$pid" || true
if [ -z "$ok" ]; then echo "test-install: the installed gateway never became healthy:" >&2; cat "$out/log" >&2; exit 1; fi
test -f /var/lib/edge-gateway/FORMAT
dpkg --purge edge-gateway >/dev/null
if id edge-gateway >/dev/null 2>&1 || [ -e /var/lib/edge-gateway ] || [ -e /usr/bin/edge-gateway ]; then
  echo "test-install: purge left something behind" >&2; exit 1
fi
echo "test-install: the package installs, runs as edge-gateway and purges cleanly"
