#!/usr/bin/env bash
# Installs the anchors the benchmark harness compares tamizdat against (Debian/Ubuntu packages):
#   rsync   (daemon on loopback + `rsync -a` client: initial sync, catch-up, no-op scan)
#   lsyncd  (delay = 0, one sync block per target: edit latency anchor)
#   nginx   (2 workers, sendfile: serving anchor)
#   wrk     (HTTP load generator for the serving scenario)
#   hugo    (static site generator: producer anchor)
# Run as root (or with sudo). Prints what was already there and what it installed.
set -euo pipefail
pkgs=(rsync lsyncd nginx wrk hugo)
sudo=
[ "$(id -u)" = 0 ] || sudo=sudo
need=()
for p in "${pkgs[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "already installed: $p $(dpkg-query -W -f='${Version}' "$p")"
  else
    need+=("$p")
  fi
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
  for p in "${need[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      echo "installed: $p $(dpkg-query -W -f='${Version}' "$p")"
    else
      echo "FAILED to install: $p" >&2
    fi
  done
fi
# The harness starts its own nginx and rsync daemons on loopback; the distribution's
# system services are not needed.
for b in rsync lsyncd nginx wrk hugo; do
  printf '%-7s %s\n' "$b" "$(command -v "$b" || echo 'NOT FOUND')"
done
