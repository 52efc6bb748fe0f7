"""Errors for user mistakes: each carries a message that names what is wrong and where.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class SoundwatchError(Exception):
    """A problem the user can fix (bad config, bad bundle, unreadable file, missing device)."""


class ConfigError(SoundwatchError):
    """The config or a manifest is invalid; the message names the YAML path and line."""


class BundleError(SoundwatchError):
    """A model bundle is refused; the message names the bundle field or file."""


class AudioError(SoundwatchError):
    """An audio file or device cannot be used; the message names the file or device."""


class RuntimeUnavailable(SoundwatchError):
    """A model runtime is not installed; the message gives the install command."""
