#!/usr/bin/env bash
# The live daemon against capture plus bare inference (`soundwatch bench --live`) on the
# bundled tone and fly-song models, each file (LiteRT, ONNX Runtime) and block size given, and
# on any further bundles named (e.g. a YAMNet bundle): CPU %, RSS, start-up, sound-to-MQTT
# latency. Needs pulseaudio, pulseaudio-utils and mosquitto (scripts/install.sh --dev).
#
#   benchmarks/live.sh [BUNDLE_FOLDER ...]
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), LIVE_SECONDS
# (recording played per run, s; default 60), LIVE_BLOCKS (default: "0.05 0.1"),
# LIVE_FILES (default: "tflite-int8 onnx-int8"), LIVE_ROUNDS (daemon and bare alternate this
# often per run, the median ratio reported; default 3). The figures go to stdout (BENCHMARKS.md,
# "Issue 14").
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
seconds=${LIVE_SECONDS:-60}
read -r -a blocks <<<"${LIVE_BLOCKS:-0.05 0.1}"
read -r -a files <<<"${LIVE_FILES:-tflite-int8 onnx-int8}"
rounds=${LIVE_ROUNDS:-3}

for model in tone flysong; do
    for file in "${files[@]}"; do
        for block in "${blocks[@]}"; do
            echo "== $model $file, blocks of $block s"
            "$python" -m edge.cli bench --live --model "$PWD/models/$model" --model-file "$file" \
                --block "$block" --seconds "$seconds" --rounds "$rounds"
            echo
        done
    done
done
for bundle in "$@"; do
    echo "== $bundle"
    "$python" -m edge.cli bench --live --model "$bundle" --seconds "$seconds" --rounds "$rounds"
    echo
done
