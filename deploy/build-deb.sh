#!/usr/bin/env bash
# Builds a Debian package of edge-gateway with dpkg-deb (no cargo-deb needed):
#   /usr/bin/edge-gateway                      the binary, without debug information
#   /lib/systemd/system/edge-gateway.service   the hardened unit (deploy/)
#   /etc/edge-gateway/gateway.toml             the default configuration (a conffile:
#                                              an upgrade never overwrites local edits)
#   /usr/share/edge-gateway/                   the Grafana dashboard and Prometheus alerts
# The post-install script creates the system user and the data directory
# (/var/lib/edge-gateway) and, where systemd runs, enables and starts the service.
#
# Usage: deploy/build-deb.sh [BINARY] [OUT_DIR]
#   BINARY   default target/lean/edge-gateway (build it first:
#            cargo build --profile lean -p edge-gateway). The package ships
#            the lean build: half the code of --release, 5-6 MB less RSS
#            and no CPU cost measured on the north job (BENCHMARKS.md);
#            it only takes longer to build.
#   OUT_DIR  default target/deb
# DEB_COMPRESSION (xz, gzip, zstd, none; default xz) chooses dpkg-deb's compressor.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/lean/edge-gateway}"
out="${2:-$root/target/deb}"
[ -x "$bin" ] || { echo "build-deb: no executable at $bin (cargo build --profile lean -p edge-gateway)" >&2; exit 2; }
# The code order list names functions by their v0 symbol names. A changed
# hot path, or only a dependency's features (crate hashes are in the names),
# leaves names the build lacks, and memory_optimized pays for it in RSS
# (BENCHMARKS.md) with no other sign. A lean build should lack none.
if [[ "$("$bin" --version)" == *"(lean)" ]] && command -v nm >/dev/null; then
  listed="$(grep -vc '^#' "$here/hot-code.order" || true)"
  missing="$(grep -v '^#' "$here/hot-code.order" | sort -u |
    comm -23 - <(nm --defined-only "$bin" | awk '{ print $NF }' | sort -u) | wc -l)"
  if [ "$missing" -gt 0 ]; then
    echo "build-deb: warning: $missing of the $listed functions in deploy/hot-code.order are not in this build; run scripts/hot-code-order on it and build again" >&2
  fi
fi
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/edge-gateway_${version}_${arch}"
install -d "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/etc/edge-gateway" "$pkg/usr/share/edge-gateway"
# Debug information is most of the release binary; the package ships without it.
objcopy --strip-debug "$bin" "$pkg/usr/bin/edge-gateway"
chmod 0755 "$pkg/usr/bin/edge-gateway"
install -m 0644 "$here/edge-gateway.service" "$pkg/lib/systemd/system/"
"$bin" config default > "$pkg/etc/edge-gateway/gateway.toml"
chmod 0644 "$pkg/etc/edge-gateway/gateway.toml"
install -m 0644 "$here/grafana/edge-gateway.json" "$here/prometheus/alerts.yml" "$pkg/usr/share/edge-gateway/"
installed_kb="$(du -sk "$pkg" | cut -f1)"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: edge-gateway
Version: $version
Architecture: $arch
Maintainer: edge-gateway developers <edge-gateway@example.invalid>
Installed-Size: $installed_kb
Depends: adduser
Section: net
Priority: optional
Description: industrial IoT edge gateway
 Polls plant devices (Modbus TCP/RTU, OPC UA, MQTT), keeps every reading in a
 write-ahead log and forwards it north (MQTT, Sparkplug B, NATS JetStream, SQL
 history) without losing one; alarms, REST and WebSocket API, Prometheus metrics.
CONTROL
echo "/etc/edge-gateway/gateway.toml" > "$pkg/DEBIAN/conffiles"
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$pkg/DEBIAN/"
mkdir -p "$out"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESSION:-xz}" --build "$pkg" "$out" >/dev/null
echo "$out/edge-gateway_${version}_${arch}.deb"
