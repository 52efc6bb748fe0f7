"""Keep the converters' own chatter off the user's terminal during export.

torch.onnx, torchao, litert-torch and TensorFlow Lite write to stderr from C++ (absl and TF
logs, the XNNPACK delegate line), from their Python loggers (torch's `W1205 ...` lines) and
through `warnings` (FutureWarnings from torch's pytree): 19 of the 25 lines an export printed.
None of it is the user's business unless a step fails, so `quiet_native` sends the process's
stderr (file descriptor 2, which all three paths end in) to a temporary file for the length of
one step; the lines are logged at DEBUG, and at WARNING when the step raised, so a failure
still shows what the converter said.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_native(step: str) -> Iterator[None]:
    """Capture everything written to stderr (Python or C++) while `step` runs; see module."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            with warnings.catch_warnings():
                # Python warnings would reach the sink too, but only once per place: ignoring
                # them here keeps the "once" registry from hiding them from later code.
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said = sink.read().decode("utf-8", "replace").splitlines()
            level = logging.WARNING if failed else logging.DEBUG
            for line in said:
                if line.strip():
                    logger.log(level, "%s: %s", step, line)
