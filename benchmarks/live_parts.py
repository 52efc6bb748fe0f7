"""The live daemon's processing thread, part by part: its CPU time per call, live.

    python benchmarks/live_parts.py MODEL_FOLDER [--seconds 20]

`soundwatch bench --live`'s sandbox (its own PulseAudio null sink and mosquitto) and recording
for the bundle; the daemon (`App`, metrics and MQTT on, everything else at its defaults) runs
in this process on the sink's monitor, with the parts of its processing loop wrapped to add up
their thread CPU time (`time.thread_time`) while the recording plays. It prints the processing
thread's CPU % of a core (from /proc, unwrapped parts included) and each part's % and µs per
call. Live the thread wakes cold (once a hop, after the other processes ran), so a part costs
2-4 times what it does on a file (benchmarks/live_path.py): this is where the per-hop figures
in BENCHMARKS.md ("Issue 14", fourth pass) come from. The wrappers cost about a µs a call.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.bench.live import _awake_recorder, _recording
from edge.bench.sandbox import free_port, sandbox
from edge.model.bundle import load_bundle

SETTLE_SECONDS = 3.0  # after start-up, before the parts are counted
spent: collections.defaultdict[str, float] = collections.defaultdict(float)
calls: collections.Counter[str] = collections.Counter()


def wrap(owner: Any, name: str, key: str) -> None:
    """Count `owner.name`'s calls and thread CPU time under `key`."""
    inner = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        began = time.thread_time()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[key] += time.thread_time() - began
            calls[key] += 1

    setattr(owner, name, counted)


def wrap_parts() -> None:
    import edge.app
    import edge.audio.capture
    import edge.audio.resample
    import edge.audio.ringbuffer
    import edge.audio.streams
    import edge.detection.analysis
    import edge.ops.status
    import edge.outputs.evidence
    import edge.outputs.files
    import edge.outputs.mqtt.sink
    import edge.pipeline

    wrap(edge.audio.capture.Capture, "wait_for_frames", "wait for the hop (select, read)")
    wrap(edge.audio.ringbuffer.RingBuffer, "read", "ring read")
    wrap(edge.audio.streams.Conditioner, "process", "conditioner (checks, resampling)")
    wrap(edge.audio.resample.StreamingResampler, "process", "  resampling")
    wrap(edge.detection.analysis.Analyzer, "push", "analyzer (frontend, model, rows, events)")
    wrap(edge.detection.analysis.Analyzer, "_score", "  score: model and delivery")
    wrap(edge.detection.analysis.Analyzer, "_deliver", "    delivery: seconds, events, sinks")
    wrap(edge.outputs.evidence.Evidence, "second", "      sinks: a second's row")
    wrap(edge.outputs.evidence.Evidence, "event", "      sinks: an event")
    wrap(edge.outputs.mqtt.sink.MqttSink, "event", "        MQTT outbox (fsync'd)")
    wrap(edge.outputs.files.DaemonFiles, "event", "        events file")
    wrap(edge.app.App, "tick", "tick (heartbeat, reload)")
    wrap(edge.pipeline, "_frames_wanted", "frames wanted (next window)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = args.model.resolve()
    with tempfile.TemporaryDirectory(prefix="soundwatch-parts-") as tmp:
        folder = Path(tmp)
        recording = _recording(folder / "played.wav", load_bundle(model), args.seconds, None)
        with sandbox(folder / "sandbox") as box:
            os.environ.update(box.env)
            recorder = _awake_recorder(box)
            wrap_parts()
            from edge.app import App
            from edge.config import load_config

            config = folder / "config.yaml"
            lines = [
                f"model: {{path: {json.dumps(str(model))}}}",
                "source: {kind: device, device: pulse}",
                f"output: {{dir: {json.dumps(str(folder / 'out'))}, print: none}}",
                f"metrics: {{address: '127.0.0.1:{free_port()}'}}",
            ]
            if box.mqtt_port is not None:
                lines.append(f"mqtt: {{host: 127.0.0.1, port: {box.mqtt_port}}}")
            config.write_text("\n".join(lines) + "\n")
            app = App(load_config(config))
            wrap(app.analyzer.backend, "predict", "  model call")
            thread = threading.get_native_id()
            span: dict[str, float] = {}

            def play() -> None:
                time.sleep(SETTLE_SECONDS)
                spent.clear()
                calls.clear()
                span["cpu"], span["at"] = thread_cpu(thread), time.monotonic()
                box.play(recording.path).wait()
                app.stop.set()

            threading.Thread(target=play, name="bench-play", daemon=True).start()
            app.run()
            wall = time.monotonic() - span["at"]
            cpu = thread_cpu(thread) - span["cpu"]
            recorder.stop()
    print(f"{model.name}: {wall:.1f} s; the processing thread {100 * cpu / wall:.3f} % of a core")
    for key, seconds in spent.items():
        per_call = 1e6 * seconds / max(1, calls[key])
        print(f"{key:42} {100 * seconds / wall:7.3f} % {calls[key]:6d} calls {per_call:8.1f} us")
    return 0


def thread_cpu(tid: int) -> float:
    """User + system CPU s of one thread of this process, from /proc."""
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
