#!/usr/bin/env bash
# Set up soundwatch in ./.venv on Debian/Ubuntu: system libraries, then the Python package.
#   scripts/install.sh            the edge (ONNX Runtime and LiteRT)
#   scripts/install.sh dev        the edge plus test tools
# Fails loudly, naming the step, when something cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

installer="soundwatch install"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

packages=(libportaudio2 libsndfile1)
python3 -c 'import venv, ensurepip' 2>/dev/null || packages+=(python3-venv)
command -v python3 >/dev/null || packages+=(python3 python3-venv)
if [ "$extras" = dev ]; then
  # systemd: `systemd-analyze verify` checks the unit (tests/test_deploy.py); nothing is started.
  # prometheus: only for `promtool`, which checks deploy/prometheus-alerts.yml (not started).
  packages+=(mosquitto mosquitto-clients pulseaudio pulseaudio-utils libasound2-plugins openssl systemd)
  packages+=(prometheus)
  # chromium: the review page's browser tests (tests/test_review_page.py), through chromedriver.
  packages+=(chromium chromium-driver)
fi
apt_install "${packages[@]}"

python3 - <<'PY' || die "soundwatch needs Python 3.10 or newer (found $(python3 --version 2>&1))"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv || die "python3 -m venv failed"
fi
say "installing soundwatch into .venv"
spec=".[tflite]"
pins=()
.venv/bin/python -m pip install -q --upgrade pip || die "pip upgrade failed"
if [ "$extras" = dev ]; then
  # The tests train and export small models, so they need the trainer too. torch is pinned
  # first: a bare `torch` requirement would pull the newest build with GBs of CUDA libraries
  # (where a CPU wheel of this version is on the index, pip takes that one). It stays pinned
  # in the install of the extras: left free there, pip once backtracked to an older torch
  # (with CUDA) and a litert-torch that fails to import with it.
  spec=".[tflite,dev,trainer,cluster,remote]"
  pins=("torch==2.13.0")
  .venv/bin/python -m pip install -q "torch==2.13.0" || die "pip install torch==2.13.0 failed"
fi
.venv/bin/python -m pip install -q -e "$spec" "${pins[@]}" || die "pip install -e '$spec' failed"
say "ready: .venv/bin/soundwatch"
