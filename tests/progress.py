"""Run the real CLI with stderr on a pseudo-terminal (or a pipe) and read what it drew there."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path


def soundwatch_stderr(args: list[str], cwd: Path, terminal: bool) -> tuple[int, str]:
    """Exit code and stderr of `soundwatch ARGS`, stderr a 120-column pty or a plain pipe."""
    command = [sys.executable, "-m", "edge.cli", *args]
    if not terminal:
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return child.wait(timeout=300), b"".join(chunks).decode(errors="replace")
