#!/usr/bin/env bash
# For the container tests: `start` runs Debian's dockerd (without touching the host firewall, which
# the network-namespace tests need as it is) and builds the stand-in base image; `stop` ends dockerd.
#   scripts/container-setup.sh start|stop
set -euo pipefail
cd "$(dirname "$0")/.."
pidfile=/tmp/ringtrain-dockerd.pid
case "${1:-}" in
  start)
    if ! docker info >/dev/null 2>&1; then
      dockerd --iptables=false --ip-forward=false --pidfile "$pidfile" >/tmp/ringtrain-dockerd.log 2>&1 &
      for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
      docker info >/dev/null 2>&1 || { tail -20 /tmp/ringtrain-dockerd.log; exit 1; }
    fi
    scripts/container-base.sh ringtrain-base:node20-bookworm-slim
    ;;
  stop)
    # What the tests started is theirs to remove; this only ends the daemon it started.
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; for _ in $(seq 1 40); do [ -f "$pidfile" ] || break; sleep 0.25; done; fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
