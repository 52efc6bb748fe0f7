"""Reading recordings: find audio files, take their start time from the name, read them in blocks.

Files are read through libsndfile (via `soundfile`) a block at a time, so hours-long recordings
never sit in memory whole. Every block is float32 with shape (frames, channels), full scale
±1.0 whatever the file's sample format.

The block helpers at the end (`sanitize`, `count_clipped`, `mix_to_mono`, `select_channel`) run
on every block of live and file audio alike, so they allocate nothing on the common path.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
import soundfile as sf

from edge.errors import AudioError

logger = logging.getLogger(__name__)

ChannelChoice = int | Literal["mix"]
"""How a multichannel input becomes the mono signal the model sees: an index, or "mix"."""

# Extensions of the containers libsndfile reads. Opus lives in Ogg; MP3 only where the linked
# libsndfile was built with it (>= 1.1.0), so both are checked at import rather than assumed.
_SNDFILE_EXTENSIONS = {
    ".wav": "WAV",
    ".wave": "WAV",
    ".flac": "FLAC",
    ".ogg": "OGG",
    ".oga": "OGG",
    ".opus": "OGG",
    ".aiff": "AIFF",
    ".aif": "AIFF",
    ".aifc": "AIFF",
    ".au": "AU",
    ".snd": "AU",
    ".caf": "CAF",
    ".w64": "W64",
    ".rf64": "RF64",
    ".mp3": "MP3",
}
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    ext for ext, fmt in _SNDFILE_EXTENSIONS.items() if fmt in sf.available_formats()
)
"""Lower-case file extensions (with the dot) that `find_audio_files` picks up."""

# Timestamps in file names. Both patterns refuse to start or end inside a longer run of digits,
# so a 16-digit serial number is not read as a date.
_SEPARATED_TIME = re.compile(
    r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_-](\d{2})[-:]?(\d{2})[-:]?(\d{2})(?!\d)Z?"
)
# SongExplorer and many recorders: 14 digits YYYYMMDDHHMMSS, e.g. PS_20130625111709_ch3.wav.
_COMPACT_TIME = re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?!\d)")

# The largest positive 16-bit code reads as 32767/32768, not 1.0; counting from there makes a
# clipped int16 recording count at both rails, not only at -1.0.
CLIP_LEVEL = 32767 / 32768
"""Absolute sample value (full scale 1.0) at or above which `count_clipped` counts a sample."""

# 16-bit files are read as int16 in pieces of this many frames (128 KiB a channel), each scaled
# to float32 into the block.
PCM16_PIECE_FRAMES = 1 << 16
PCM16_SCALE = np.float32(1 / 32768)


def start_time_from_name(path: str | Path) -> datetime | None:
    """The UTC start time written in a file's name, or None if there is none (or it is invalid).

    Recognised, anywhere in the name (not the folders): `20161207T102314`, `20161207_102314`,
    `20161207-102314`, `2016-12-07T10-23-14`, `2016-12-07T10:23:14` (each optionally followed
    by `Z`), and 14 digits `YYYYMMDDHHMMSS` as SongExplorer writes them
    (`PS_20130625111709_ch3.wav`).

    Times in names are taken as UTC: recorders in the field are expected to run on UTC, and a
    local-time name cannot be placed without knowing the recorder's zone. Pass the start time
    explicitly for files named in local time. A name whose only candidate is not a real date or
    time (month 13, hour 25) gives None.
    """
    name = Path(path).name
    for pattern in (_SEPARATED_TIME, _COMPACT_TIME):
        for match in pattern.finditer(name):
            year, month, day, hour, minute, second = (int(part) for part in match.groups())
            try:
                return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
            except ValueError:
                continue
    return None


def find_audio_files(paths: Iterable[str | Path]) -> list[Path]:
    """Audio files named by `paths`, folders searched recursively; sorted within each folder.

    A file named explicitly is kept whatever its extension (the user asked for it); inside
    folders only `AUDIO_EXTENSIONS` are picked up, case-insensitively, and hidden files (name
    starting with ".") are skipped. Order: the arguments in the order given, each folder's files
    sorted by path. Duplicates are kept once. A path that does not exist raises AudioError.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(
                child
                for child in path.rglob("*")
                if child.is_file()
                and child.suffix.lower() in AUDIO_EXTENSIONS
                and not child.name.startswith(".")
            )
        elif path.is_file():
            candidates = [path]
        elif path.exists():
            raise AudioError(f"{path}: not a file or folder")
        else:
            raise AudioError(f"{path}: no such file or folder")
        for candidate in candidates:
            if candidate not in seen:
                seen.add(candidate)
                found.append(candidate)
    return found


class AudioFile:
    """An open recording, read a block at a time.

    Use as a context manager::

        with AudioFile.open(path) as audio:
            for block in audio.blocks(audio.sample_rate_hz // 10):
                ...

    Opening checks the file is readable audio with at least one sample; otherwise AudioError
    names the file and the reason. A file cut short (the header promises more frames than the
    file holds) is read up to where the data ends: `blocks` then stops early, `frames_read`
    says how far it got and `read_error` holds libsndfile's reason when it had one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.frames_read = 0
        """Frames delivered by `blocks` so far."""
        self.read_error: str | None = None
        """Why reading stopped before `frames`, when libsndfile reported a reason."""
        self._file = _open_soundfile(self.path)
        self._pcm16: np.ndarray | None = None  # a 16-bit file's int16 piece, once it is read

    @classmethod
    def open(cls, path: str | Path) -> AudioFile:
        """Open `path` for reading; raises AudioError if it is not usable audio."""
        return cls(path)

    @property
    def sample_rate_hz(self) -> int:
        """Sample rate from the file header, Hz."""
        return int(self._file.samplerate)

    @property
    def channels(self) -> int:
        """Number of channels in the file."""
        return int(self._file.channels)

    @property
    def frames(self) -> int:
        """Frames (samples per channel) the header declares; a truncated file may hold fewer."""
        return int(self._file.frames)

    @property
    def duration_seconds(self) -> float:
        """Declared length in seconds (`frames / sample_rate_hz`)."""
        return self.frames / self.sample_rate_hz

    @property
    def format_name(self) -> str:
        """Container and sample format, e.g. "WAV PCM_16"."""
        return f"{self._file.format} {self._file.subtype}"

    def blocks(self, block_frames: int, *, reuse_buffer: bool = True) -> Iterator[np.ndarray]:
        """Yield float32 blocks of shape (n, channels), n = `block_frames` except the last.

        Reading continues from where the previous call stopped. With `reuse_buffer` (the
        default) every block is a view of one preallocated array, overwritten by the next
        block: consume or copy it before asking for the next one. `reuse_buffer=False` yields
        a fresh array each time.

        A read error part-way (a truncated FLAC, a cut Ogg page) ends the iteration early
        instead of raising: what was readable has been delivered, the reason goes to
        `read_error` and a warning is logged once.
        """
        if block_frames <= 0:
            raise ValueError(f"block_frames must be positive, got {block_frames}")
        buffer = np.empty((block_frames, self.channels), dtype=np.float32)
        read = self._read_pcm16 if self._file.subtype == "PCM_16" else self._read_float
        while True:
            out = buffer if reuse_buffer else np.empty_like(buffer)
            try:
                block = read(out)
            except (sf.LibsndfileError, RuntimeError) as error:
                self.read_error = _libsndfile_reason(error)
                logger.warning(
                    "%s: stopped reading at frame %d of %d (%s)",
                    self.path,
                    self.frames_read,
                    self.frames,
                    self.read_error,
                )
                return
            if len(block) == 0:
                return
            self.frames_read += len(block)
            yield block
            if len(block) < block_frames:
                return

    def _read_float(self, out: np.ndarray) -> np.ndarray:
        return self._file.read(len(out), dtype="float32", always_2d=True, out=out)

    def _read_pcm16(self, out: np.ndarray) -> np.ndarray:
        """`out`'s frames (or fewer, at the end) of a 16-bit file: read as int16 a piece at a
        time and scaled here, 3.6x faster than libsndfile's float conversion (BirdNET's scan of
        44.1 kHz WAV: 0.1 to 0.03 ms a second of audio) and the same floats: an int16 times
        2**-15 is exact in float32, which is what libsndfile computes."""
        if self._pcm16 is None:
            self._pcm16 = np.empty((PCM16_PIECE_FRAMES, self.channels), dtype=np.int16)
        done = 0
        while done < len(out):
            piece = self._pcm16[: len(out) - done]
            got = len(self._file.read(len(piece), dtype="int16", always_2d=True, out=piece))
            np.multiply(piece[:got], PCM16_SCALE, out=out[done : done + got])
            done += got
            if got < len(piece):
                break
        return out[:done]

    def seek(self, frame: int) -> None:
        """Read on from `frame` (a shard of a long recording begins mid-file); a file that
        cannot get there (cut short) raises AudioError."""
        try:
            self._file.seek(frame)
        except (sf.LibsndfileError, RuntimeError) as error:
            reason = _libsndfile_reason(error)
            raise AudioError(f"{self.path}: cannot seek to frame {frame} ({reason})") from None
        self.frames_read = frame

    def close(self) -> None:
        """Close the file; idempotent."""
        self._file.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"AudioFile({str(self.path)!r}, {self.sample_rate_hz} Hz, "
            f"{self.channels} ch, {self.duration_seconds:.3f} s)"
        )


def _libsndfile_reason(error: Exception) -> str:
    """libsndfile's own words for `error`, without soundfile's "Error opening ..." prefix."""
    reason = getattr(error, "error_string", None) or str(error)
    return str(reason).strip().rstrip(".")


MAX_RATE_HZ = 2_000_000  # as source.sample_rate_hz allows; ultrasound recorders reach 768 kHz


def _open_soundfile(path: Path) -> sf.SoundFile:
    """Open `path` with libsndfile, turning every failure into a one-line AudioError."""
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty (0 bytes)")
    try:
        # As bytes: a name that is not valid UTF-8 (surrogate escapes) is still a file.
        handle = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(
            f"{path}: not a readable audio file ({_libsndfile_reason(error)})"
        ) from None
    except OSError as error:
        raise AudioError(f"{path}: cannot open ({error.strerror or error})") from None
    except (ValueError, UnicodeError) as error:
        raise AudioError(f"{path}: cannot open ({error})") from None
    if handle.frames <= 0:
        handle.close()
        raise AudioError(f"{path}: empty (0 samples)")
    if not 0 < handle.samplerate <= MAX_RATE_HZ:  # a damaged header: no converter runs at GHz
        handle.close()
        raise AudioError(f"{path}: invalid sample rate {handle.samplerate} Hz in header")
    return handle


# --- per-block helpers: the same for live and file audio --------------------------------------


ABSURD_LEVEL = 1000.0
"""A sample beyond ±this (60 dB over full scale) is no sound a converter made but a broken float
file (values like 1e30, whose squares overflow): counted as bad, and clipped to ±1."""


def is_sane(high: float, low: float) -> bool:
    """Whether a block whose max and min these are needs no `sanitize`."""
    return bool(low >= -ABSURD_LEVEL and high <= ABSURD_LEVEL)  # False for NaN, too


def sanitize(block: np.ndarray) -> int:
    """Replace NaN and ±inf samples with 0 and clip absurd ones (beyond ±ABSURD_LEVEL) to ±1,
    in place; return how many were bad.

    One bad sample would otherwise turn every FFT frame and model score it touches into NaN or
    overflow. The caller adds the count to a metric so a broken device or file is visible. The
    common case (all sane) costs one reduction each way and allocates nothing.
    """
    # max and min propagate NaN and reach ±inf, without the overflow warnings a sum gives.
    if block.size == 0 or is_sane(block.max(), block.min()):
        return 0
    bad = ~np.isfinite(block)
    count = int(np.count_nonzero(bad))
    block[bad] = 0.0
    wild = np.abs(block) > ABSURD_LEVEL
    count += int(np.count_nonzero(wild))
    np.clip(block, -1.0, 1.0, out=block, where=wild)
    return count


def count_clipped(block: np.ndarray, level: float = CLIP_LEVEL) -> int:
    """Number of samples with |x| >= `level` (full scale 1.0): legal, but counted for metrics.

    The default `CLIP_LEVEL` is the largest positive 16-bit value (32767/32768), so clipping is
    seen at both rails of integer recordings. Allocates only when something is clipped.
    """
    if block.size == 0 or (block.max() < level and block.min() > -level):
        return 0
    return int(np.count_nonzero(np.abs(block) >= level))


def mix_to_mono(block: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Average the channels of `block` (n, channels) into `out[:n]`; return that view.

    `out` is a preallocated float32 1-D array at least n long.
    """
    frames = block.shape[0]
    target = out[:frames]
    if block.shape[1] == 1:
        np.copyto(target, block[:, 0])
    else:
        np.mean(block, axis=1, out=target)
    return target


def select_channel(block: np.ndarray, channel: ChannelChoice, out: np.ndarray) -> np.ndarray:
    """The mono signal chosen by config: channel index `channel` (0-based) or "mix" (average).

    Writes into `out[:n]` (a preallocated float32 1-D array) and returns that view.
    An index outside the block's channels raises AudioError.
    """
    if channel == "mix":
        return mix_to_mono(block, out)
    check_channel(channel, block.shape[1])
    frames = block.shape[0]
    target = out[:frames]
    np.copyto(target, block[:, channel])
    return target


def check_channel(channel: ChannelChoice, channels: int, where: str = "input") -> None:
    """Raise AudioError unless `channel` is "mix" or a valid 0-based index into `channels`.

    `where` names the source in the message (a file path or device name).
    """
    if channel == "mix":
        return
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise AudioError(f"{where}: channel must be an index or 'mix', got {channel!r}")
    if not 0 <= channel < channels:
        raise AudioError(
            f"{where}: channel {channel} requested but it has {channels} channel(s) "
            f"(valid: 0-{channels - 1} or 'mix')"
        )
