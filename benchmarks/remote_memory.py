"""Peak memory of `soundwatch scan` from S3 to S3 against the length of the file scored.

Starts `moto_server` (an S3 server, in its own process so its memory is not counted) on
127.0.0.1, uploads one noise recording of each length given, and runs the real scan of each in
a fresh process, reporting its peak RSS (ru_maxrss of the child). Flat memory means the
download and the upload stream, whatever the file's length. Needs the `remote` and `dev`
extras. Usage:

    python benchmarks/remote_memory.py [--minutes 5 60] [--model tone]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE_HZ = 16000
# The real command line in a fresh process, then that process's own peak RSS (VmHWM, KiB;
# not ru_maxrss, which a child carries over from its parent's peak at fork on Linux).
SCAN_THEN_PEAK = (
    "import re, sys; from edge.cli import main; rc = main(sys.argv[1:]);"
    " print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); sys.exit(rc)"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_noise(path: Path, minutes: float) -> None:
    """Noise at RMS 0.05, written a minute at a time so this script stays small too."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", RATE_HZ, 1, "PCM_16") as f:
        for _ in range(round(minutes)):
            f.write((0.05 * rng.standard_normal(60 * RATE_HZ)).astype(np.float32))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 60.0])
    parser.add_argument("--model", default="tone")
    args = parser.parse_args()
    port = free_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    moto = Path(sys.executable).with_name("moto_server")
    server = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)
        os.environ.update(env)
        import s3fs

        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        print("| audio | file MiB | peak RSS MiB | wall s |")
        print("| --- | --- | --- | --- |")
        with tempfile.TemporaryDirectory() as tmp:
            for minutes in args.minutes:
                local = Path(tmp, f"noise_{minutes:g}min_20260101T000000.wav")
                write_noise(local, minutes)
                key = f"bench/in{minutes:g}/{local.name}"
                fs.put_file(str(local), key)
                command = [sys.executable, "-c", SCAN_THEN_PEAK, "scan",
                           f"s3://bench/in{minutes:g}/", "--model", args.model,
                           "--out", f"s3://bench/out{minutes:g}/", "-q"]  # fmt: skip
                began = time.perf_counter()
                done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
                wall = time.perf_counter() - began
                peak_kib = int(done.stdout.split()[-1])
                mib = local.stat().st_size / 2**20
                print(f"| {minutes:g} min | {mib:.0f} | {peak_kib / 1024:.0f} | {wall:.1f} |")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
