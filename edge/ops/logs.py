"""Logging to stderr: timestamps on a terminal or in a file, syslog priorities under systemd.

journald stamps every line itself and, without a hint, files every line at the unit's one
priority (`SyslogLevel=`, info by default), so `journalctl -p warning` finds no warnings. A line
that starts with `<N>` (N a syslog priority: 3 error, 4 warning, 6 info, 7 debug) is filed at
that priority instead, with the prefix removed (sd-daemon(3)). So when stderr is the journal we
write that prefix and no timestamp of our own.

stderr is the journal when `$JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd for a unit whose
stdout or stderr it connected to the journal) names stderr's own device and inode:
systemd.exec(5) asks programs to compare, since a child whose stderr was redirected elsewhere
inherits the variable too.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# logging level -> syslog priority (RFC 5424): CRITICAL 2 crit, ERROR 3 err, WARNING 4 warning,
# INFO 6 info, DEBUG 7 debug. Levels in between round up to the next more severe one.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a logging level (e.g. WARNING -> 4)."""
    for level, priority in _PRIORITIES:
        if levelno >= level:
            return priority
    return _DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """`<priority>name: message`, the prefix on every line: journald files each line of a
    multi-line message (a traceback, a list of config problems) as its own entry."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when `$JOURNAL_STREAM` names this stream's (default stderr's) device and inode."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a real file (pytest capture)
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def setup_logging(level: str) -> None:
    """Root logging to stderr at `level` ("debug" .. "error"), replacing any earlier setup (the
    daemon calls it again with the configured level once the config is read)."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(TERMINAL_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
