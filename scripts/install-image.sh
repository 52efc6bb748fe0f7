#!/usr/bin/env bash
# Install soundwatch to run as a service: into a virtual environment of its own (default
# /opt/soundwatch), not editable, with the bundled models inside the package (edge/bundled).
#
#   sudo scripts/install-image.sh                    /opt/soundwatch (what systemd/soundwatch.service runs)
#   scripts/install-image.sh PREFIX                  anywhere you can write
#   scripts/install-image.sh --image /opt/soundwatch what the Dockerfile runs: also keeps no caches
#
# The Docker image runs exactly this script, and tests/test_deploy.py runs it with the
# Dockerfile's arguments into a temporary prefix, so the image has no untested install step.
# Steps: system libraries (apt-get, only those missing), the venv, `pip install .[tflite]`,
# then a smoke test of the installed command outside the checkout. Fails loudly, naming the step.
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
installer="soundwatch install-image"
# shellcheck source=scripts/lib.sh
. "$src/scripts/lib.sh"

image=0
if [ "${1:-}" = --image ]; then image=1; shift; fi
[ $# -le 1 ] || die "usage: $0 [--image] [PREFIX]"
prefix="${1:-/opt/soundwatch}"
case "$prefix" in /*) ;; *) die "PREFIX must be an absolute path, got '$prefix'" ;; esac
# 32-bit Arm has neither an ONNX Runtime nor a LiteRT wheel: there tflite-runtime (numpy<2)
# runs the bundles' TFLite files, and pyproject.toml's markers leave onnxruntime out.
extras=tflite
arm32=0
case "$(uname -m)" in armv6l | armv7l | armv8l) arm32=1 extras=tflite-legacy ;; esac

# PortAudio for capture (sounddevice loads it at import), libsndfile for reading files.
packages=(libportaudio2 libsndfile1)
command -v python3 >/dev/null || packages+=(python3 python3-venv)
command -v python3 >/dev/null && ! python3 -c 'import venv, ensurepip' 2>/dev/null && packages+=(python3-venv)
apt_install "${packages[@]}"
# An image keeps no package lists: they are 20 MB and stale by the next build anyway.
if [ $image = 1 ]; then as_root rm -rf /var/lib/apt/lists/*; fi

python3 - <<'PY' || die "soundwatch needs Python 3.10 or newer (found $(python3 --version 2>&1))"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [ ! -x "$prefix/bin/python" ]; then
  say "creating the virtual environment $prefix"
  python3 -m venv "$prefix" || die "python3 -m venv $prefix failed"
fi

spec="$src"
[ -n "$extras" ] && spec="$src[$extras]"
say "installing soundwatch ($spec) into $prefix"
pip_args=(--quiet --disable-pip-version-check)
[ $image = 1 ] && pip_args+=(--no-cache-dir)
"$prefix/bin/python" -m pip install "${pip_args[@]}" "$spec" || die "pip install '$spec' failed"

say "checking the installed soundwatch"
# From an empty folder with a config naming the bundled model: proves the command, the
# runtimes and the bundled models (package data) work without the checkout.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf 'model: {path: tone}\n' > "$work/config.yaml"
(cd "$work" && "$prefix/bin/python" -c 'import sounddevice') \
  || die "sounddevice cannot load PortAudio (is libportaudio2 installed?)"
if [ $arm32 = 0 ]; then
  (cd "$work" && "$prefix/bin/soundwatch" check -c config.yaml --model-file onnx-int8) \
    || die "soundwatch check with the bundled model on ONNX Runtime failed"
fi
(cd "$work" && "$prefix/bin/soundwatch" check -c config.yaml --model-file tflite-int8) \
  || die "soundwatch check with the bundled model on LiteRT failed"
say "ready: $prefix/bin/soundwatch"
