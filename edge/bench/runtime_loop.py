"""The bare runtime loop of `soundwatch bench`: the baseline scan's memory is held against.

`python edge/bench/runtime_loop.py SPEC` (run as a file, so no soundwatch package is
imported) runs in its own process, so its peak RSS is its own: Python, numpy and one runtime
(ONNX Runtime or LiteRT) open on the model file, fed `windows` windows of noise through the
runtime's own API, `batch` windows a call where the model takes a batch and one a call where
its input shape fixes one. What scan's process holds above this is soundwatch's own: its
imports, buffers and outputs.

SPEC (JSON): model_file, runtime ("onnx" or "tflite"), feature_shape, windows, batch, threads,
cpus. Prints one JSON line: peak_rss_mib, seconds, windows, calls.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def run_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model with its runtime and score `windows` noise windows; what it cost."""
    if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
    feature_shape = tuple(int(d) for d in spec["feature_shape"])
    windows, batch, threads = int(spec["windows"]), int(spec["batch"]), int(spec["threads"])
    if spec["runtime"] == "onnx":
        call, per_call = _onnx(spec["model_file"], feature_shape, batch, threads)
    else:
        call, per_call = _litert(spec["model_file"], feature_shape, threads)
    rng = np.random.default_rng(0)
    calls = max(1, -(-windows // per_call))
    began = time.perf_counter()
    for _ in range(calls):
        call(rng)
    seconds = time.perf_counter() - began
    return {
        "peak_rss_mib": peak_rss_mib(),
        "seconds": seconds,
        "windows": calls * per_call,
        "calls": calls,
    }


def _call_shape(declared: list[Any], feature_shape: tuple[int, ...], batch: int) -> list[int]:
    """The declared input shape with its dynamic dimensions filled: the first (the batch) with
    `batch`, the others from the bundle's feature shape, matched from the right."""
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in declared]
    for i in range(len(shape)):
        if shape[i] == -1:
            from_right = len(shape) - i
            fits = from_right <= len(feature_shape) and i > 0
            shape[i] = feature_shape[-from_right] if fits else batch
    return shape


def _onnx(path: str, feature_shape: tuple[int, ...], batch: int, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = _call_shape(list(model_input.shape), feature_shape, batch)
    per_call = shape[0] if len(shape) > len(feature_shape) else 1
    x = np.empty(shape, np.float32)
    name = model_input.name

    def call(rng: np.random.Generator) -> None:
        x[...] = rng.standard_normal(x.shape, np.float32)
        session.run(None, {name: x})

    return call, per_call


def _litert(path: str, feature_shape: tuple[int, ...], threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the older package name
        from tflite_runtime.interpreter import Interpreter  # 32-bit Arm (see runtime/litert.py)

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    shape = [int(d) for d in details["shape"]]
    per_call = shape[0] if len(shape) > len(feature_shape) else 1
    dtype = np.dtype(details["dtype"])
    index, output = details["index"], interpreter.get_output_details()[0]["index"]

    def call(rng: np.random.Generator) -> None:
        x = rng.standard_normal(shape, np.float32)
        if dtype.kind == "i":  # a quantized input: noise in the integer range
            x = np.clip(x * 32, np.iinfo(dtype).min, np.iinfo(dtype).max)
        interpreter.set_tensor(index, x.astype(dtype))
        interpreter.invoke()
        interpreter.get_tensor(output)

    return call, per_call


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB; see edge.bench.measure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python edge/bench/runtime_loop.py SPEC_JSON (run by `soundwatch bench`)")
        sys.exit(2)
    print(json.dumps(run_bare(json.loads(sys.argv[1]))))
