"""Peak RSS of `scan` against input length, next to a bare runtime loop on the same model.

    python benchmarks/scan_memory.py --model flysong --rate 2500 --lengths 600 3600 14400
    python benchmarks/scan_memory.py --model /tmp/yamnet-bundle --rate 16000

For each length, synthetic audio (edge.bench.write_synthetic: noise with tone bursts) is
written once, then every model file of the bundle scans it in a fresh process pinned to one
core (`scan` as `soundwatch scan` runs it, batch 256), and the bare loop of `soundwatch bench`
(edge/bench/runtime_loop.py, its own process) scores as many windows. Peak RSS is VmHWM. The curve
must stay flat: nothing in scan may grow with the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(spec: dict[str, str]) -> None:
    """Scan one file with one model file; print its peak RSS and windows as JSON."""
    from dataclasses import replace

    from edge.bench.runtime_loop import peak_rss_mib
    from edge.builders import build_analyzer
    from edge.config import load_config
    from edge.scan import SCAN_BATCH_WINDOWS, scan

    loaded = load_config(None)
    model = replace(loaded.config.model, path=spec["model"], file=spec["file_key"], threads=1)
    loaded = replace(loaded, config=replace(loaded.config, model=model))
    _, analyzer = build_analyzer(loaded, None, batch_windows=SCAN_BATCH_WINDOWS)
    largest = 0
    predict = analyzer.backend.predict

    def counted(batch: Any, out: Any = None) -> Any:
        nonlocal largest
        largest = max(largest, len(batch))
        return predict(batch, out)

    analyzer.backend.predict = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as out:
        report = scan(analyzer, [Path(spec["audio"])], Path(out), device="m", progress=False)
    rss = peak_rss_mib()
    print(json.dumps({"peak_rss_mib": rss, "windows": report.windows, "batch": largest}))


def run(command: list[str]) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command[:3])}: failed: {done.stderr.strip()[-500:]}")
    result: dict[str, float] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle folder or bundled model's name")
    parser.add_argument("--rate", type=int, default=44100, help="synthetic audio rate, Hz")
    parser.add_argument("--lengths", type=float, nargs="+", default=[600.0, 3600.0, 14400.0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    if not args.model:
        parser.error("--model is required")
    sys.path.insert(0, str(ROOT))
    from edge.bench import _bundled, write_synthetic
    from edge.model.bundle import load_bundle
    from edge.model.runtime.base import FILE_KEYS

    bundle = load_bundle(_bundled(Path(args.model)))
    keys = [k for k in FILE_KEYS if k in bundle.manifest.files]
    cpu = sorted(os.sched_getaffinity(0))[-1:]
    print(f"model {bundle.manifest.name}, synthetic audio at {args.rate} Hz, one core (CPU {cpu})")
    print("length_s  file_key      scan_rss_mib  bare_rss_mib  extra_mib  windows")
    with tempfile.TemporaryDirectory(prefix="scan-memory-") as tmp:
        for seconds in args.lengths:
            audio = write_synthetic(Path(tmp) / f"{seconds:g}s.wav", seconds, args.rate)
            for key in keys:
                spec = {"model": str(bundle.folder), "file_key": key, "audio": str(audio)}
                pin = ["taskset", "-c", str(cpu[0])]
                scanned = run([*pin, sys.executable, __file__, "--child", json.dumps(spec)])
                runtime = "onnx" if key.startswith("onnx") else "tflite"
                bare_spec = {
                    "model_file": str(bundle.folder / bundle.manifest.files[key].path),
                    "runtime": runtime,
                    "feature_shape": list(bundle.feature_shape),
                    "windows": scanned["windows"],
                    "batch": scanned["batch"],  # the largest scan gave the runtime
                    "threads": 1,
                    "cpus": None,
                }
                bare_script = str(ROOT / "edge" / "bench" / "runtime_loop.py")
                bare = run([*pin, sys.executable, bare_script, json.dumps(bare_spec)])
                scan_rss, bare_rss = scanned["peak_rss_mib"], bare["peak_rss_mib"]
                print(
                    f"{seconds:8g}  {key:12s}  {scan_rss:12.0f}  {bare_rss:12.0f}"
                    f"  {scan_rss - bare_rss:9.0f}  {scanned['windows']:7.0f}",
                    flush=True,
                )
            audio.unlink()


if __name__ == "__main__":
    main()
