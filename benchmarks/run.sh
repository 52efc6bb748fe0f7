#!/usr/bin/env bash
# Benchmark `soundwatch scan` against bare model inference (`soundwatch bench`) on every bundled
# model (models/*/), on synthetic audio and, when paths are given, on those recordings too.
#
#   benchmarks/run.sh [RECORDING_OR_FOLDER ...]
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3), BENCH_SECONDS
# (synthetic audio per model, s; default 600), BENCH_OPTIONS (more `soundwatch bench` options).
# The figures go to stdout; see benchmarks/README.md for how to read them.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [[ -z $python ]]; then
    if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
bench_seconds=${BENCH_SECONDS:-600}
read -r -a options <<<"${BENCH_OPTIONS:-}"

models=()
for manifest in models/*/manifest.yaml; do
    [[ -e $manifest ]] && models+=("$(dirname "$manifest")")
done
if [[ ${#models[@]} -eq 0 ]]; then
    # No bundle in models/ yet: build the demo `tone` bundle (needs the dev extras).
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$python" -c 'import sys, pathlib, trainer.toybundle as t; t.make_tone_bundle(pathlib.Path(sys.argv[1]))' "$tmp/tone"
    models=("$tmp/tone")
fi

for model in "${models[@]}"; do
    echo "== soundwatch bench --model $model --seconds $bench_seconds ${options[*]}"
    "$python" -m edge.cli bench --model "$model" --seconds "$bench_seconds" "${options[@]}"
    echo
    if [[ $# -gt 0 ]]; then
        echo "== soundwatch bench --model $model --files $* ${options[*]}"
        "$python" -m edge.cli bench --model "$model" --files "$@" "${options[@]}"
        echo
    fi
done
