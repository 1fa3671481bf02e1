#!/usr/bin/env bash
# The local demo: `./demo.sh up` installs what is missing and starts two simulated
# Quay sites on real S3 servers (moto), BIND 9, HAProxy, trafficd and Prometheus,
# all on 127.0.0.1; `./demo.sh down` stops everything it started.
# Other commands (break SITE, repair SITE, watch, tour) go to `python -m trafficd.demo`.
# Debian packages are installed with apt-get (as root, or through sudo) only if missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ "${1:-up}" != down ]; then
  missing=()
  for pair in named:bind9 tsig-keygen:bind9-utils haproxy:haproxy prometheus:prometheus; do
    binary=${pair%%:*} package=${pair#*:}
    command -v "$binary" >/dev/null || test -x "/usr/sbin/$binary" || missing+=("$package")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "demo: installing ${missing[*]} (apt-get)" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x .venv/bin/trafficd ] || ! .venv/bin/python -c 'import moto, boto3' 2>/dev/null; then
    echo "demo: installing trafficd and the demo extra into .venv" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q '.[demo]'
  fi
fi
exec .venv/bin/python -m trafficd.demo --dir "${TRAFFICD_DEMO_DIR:-.demo}" "${1:-up}" "${@:2}"
