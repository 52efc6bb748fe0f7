"""edge.audio.files: names to times, finding files, block reading, bad files, block helpers."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio.files import (
    CLIP_LEVEL,
    AudioFile,
    check_channel,
    count_clipped,
    find_audio_files,
    mix_to_mono,
    sanitize,
    select_channel,
    start_time_from_name,
)
from edge.errors import AudioError
from tests.audio import noise, tone, tone_events, write_wav

SR = 16000
# libsndfile 1.2 writes floats to 16 bits as floor(x * 32768), not rounded, so a round trip is
# off by up to one step (2**-15); half a step more for margin.
PCM16_TOLERANCE = 1.5 / 32768


def read_all(path: Path, block_frames: int) -> tuple[np.ndarray, list[int]]:
    with AudioFile.open(path) as audio:
        blocks = [block.copy() for block in audio.blocks(block_frames)]
    return np.concatenate(blocks), [len(block) for block in blocks]


# --- start_time_from_name ---------------------------------------------------------------------

T_2016 = datetime(2016, 12, 7, 10, 23, 14, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "name",
    [
        "20161207T102314.wav",
        "20161207_102314.wav",
        "20161207-102314.wav",
        "2016-12-07T10-23-14.flac",
        "2016-12-07T10:23:14.wav",
        "2016-12-07T10:23:14Z.wav",
        "20161207T102314Z.wav",
        "site3_20161207T102314_mic2.wav",
        "/data/2020-01-01/20161207T102314.wav",
    ],
)
def test_start_time_separated_forms(name: str) -> None:
    assert start_time_from_name(name) == T_2016


def test_start_time_songexplorer_form() -> None:
    expected = datetime(2013, 6, 25, 11, 17, 9, tzinfo=timezone.utc)
    assert start_time_from_name("PS_20130625111709_ch3.wav") == expected
    assert start_time_from_name(Path("x/20130625111709.wav")) == expected


def test_start_time_is_utc() -> None:
    start = start_time_from_name("20161207T102314.wav")
    assert start is not None and start.utcoffset() is not None
    assert start.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "name",
    [
        "20161307T102314.wav",  # month 13
        "20160230T102314.wav",  # 30 February
        "20161207T252314.wav",  # hour 25
        "PS_20131325111709_ch3.wav",
        "recording.wav",
        "1234567890123456.wav",  # 16 digits: a serial number, not a time
        "20161207.wav",  # a date without a time
    ],
)
def test_start_time_invalid_or_absent(name: str) -> None:
    assert start_time_from_name(name) is None


def test_start_time_takes_first_valid_candidate() -> None:
    assert start_time_from_name("20161399T000000_20161207T102314.wav") == T_2016


# --- find_audio_files -------------------------------------------------------------------------


def test_find_audio_files_nested_sorted_and_filtered(tmp_path: Path) -> None:
    signal = tone(440, 0.01, SR)
    wanted = [
        tmp_path / "a.wav",
        tmp_path / "b" / "c.FLAC",
        tmp_path / "b" / "d" / "e.wav",
        tmp_path / "z.ogg",
    ]
    write_wav(wanted[0], signal, SR)
    write_wav(wanted[1], signal, SR)
    write_wav(wanted[2], signal, SR)
    write_wav(wanted[3], signal, SR, subtype="VORBIS")
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "b" / "labels.csv").write_text("wav,start_tic\n")
    (tmp_path / "b" / ".hidden.wav").write_bytes(b"")

    assert find_audio_files([tmp_path]) == sorted(wanted)


def test_find_audio_files_keeps_argument_order_and_explicit_files(tmp_path: Path) -> None:
    first = write_wav(tmp_path / "one" / "x.wav", tone(440, 0.01, SR), SR)
    second = write_wav(tmp_path / "two" / "y.wav", tone(440, 0.01, SR), SR)
    odd = tmp_path / "raw.dat"
    odd.write_bytes(b"explicit files are kept whatever their extension")

    found = find_audio_files([tmp_path / "two", odd, tmp_path / "one", second])
    assert found == [second, odd, first]


def test_find_audio_files_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(AudioError, match="nowhere: no such file or folder"):
        find_audio_files([tmp_path, missing])


# --- reading ----------------------------------------------------------------------------------


def test_blocks_equal_written_signal_pcm16(tmp_path: Path) -> None:
    signal = tone_events(SR, 2.0, [(0.5, 1.2, 1000.0)], noise_amplitude=0.05)
    path = write_wav(tmp_path / "events.wav", signal, SR)

    with AudioFile.open(path) as audio:
        assert audio.sample_rate_hz == SR
        assert audio.channels == 1
        assert audio.frames == 32000
        assert audio.duration_seconds == pytest.approx(2.0)
        assert audio.format_name == "WAV PCM_16"

    read, sizes = read_all(path, 3000)
    assert sizes == [3000] * 10 + [2000]
    assert read.dtype == np.float32 and read.shape == (32000, 1)
    np.testing.assert_allclose(read[:, 0], signal, rtol=0, atol=PCM16_TOLERANCE)


def test_blocks_float_file_is_exact(tmp_path: Path) -> None:
    signal = noise(1.0, SR, 0.2, seed=3)
    path = write_wav(tmp_path / "float.wav", signal, SR, subtype="FLOAT")
    read, _ = read_all(path, 4096)
    np.testing.assert_array_equal(read[:, 0], signal)


def test_blocks_stereo_keeps_channels(tmp_path: Path) -> None:
    left = tone(440, 1.0, SR, 0.3)
    right = tone(1000, 1.0, SR, 0.6)
    path = write_wav(tmp_path / "stereo.wav", np.stack([left, right], axis=1), SR)

    with AudioFile.open(path) as audio:
        assert audio.channels == 2
    read, _ = read_all(path, 1024)
    assert read.shape == (16000, 2)
    np.testing.assert_allclose(read[:, 0], left, atol=PCM16_TOLERANCE)
    np.testing.assert_allclose(read[:, 1], right, atol=PCM16_TOLERANCE)


def test_blocks_flac(tmp_path: Path) -> None:
    signal = tone_events(SR, 1.5, [(0.2, 0.9, 3000.0)], noise_amplitude=0.02, seed=7)
    path = write_wav(tmp_path / "events.flac", signal, SR)

    with AudioFile.open(path) as audio:
        assert audio.format_name == "FLAC PCM_16"
        assert audio.frames == 24000
    read, _ = read_all(path, 5000)
    np.testing.assert_allclose(read[:, 0], signal, atol=PCM16_TOLERANCE)


@pytest.mark.parametrize("name", ["all.wav", "all.flac", "all.aiff"])
def test_blocks_16_bit_are_libsndfile_floats_exactly(tmp_path: Path, name: str) -> None:
    # 16-bit files are read as int16 and scaled here (PCM16_PIECE_FRAMES at a time): every
    # code, in both channels, must come out as the very float libsndfile's own conversion gives.
    codes = np.arange(-32768, 32768, dtype=np.int16)
    frames = np.stack([np.tile(codes, 2), np.tile(codes[::-1], 2)], axis=1)  # 131,072 frames
    path = tmp_path / name
    sf.write(path, frames, SR, subtype="PCM_16")
    expected = sf.read(path, dtype="float32", always_2d=True)[0]
    read, sizes = read_all(path, 100_000)  # blocks longer than a piece, and a short last one
    assert sizes == [100_000, 31_072]
    np.testing.assert_array_equal(read, expected)
    assert read[0, 0] == -1.0 and read[32768, 0] == 0.0 and read[65535, 0] == 32767 / 32768


def test_blocks_reuse_buffer_unless_asked(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "t.wav", tone(440, 0.5, SR), SR)
    with AudioFile.open(path) as audio:
        reused = list(audio.blocks(1000))
    assert len(reused) == 8
    assert all(np.shares_memory(reused[0], block) for block in reused)
    with AudioFile.open(path) as audio:
        fresh = list(audio.blocks(1000, reuse_buffer=False))
    assert not np.shares_memory(fresh[0], fresh[1])
    assert sum(len(block) for block in fresh) == 8000


def test_blocks_rejects_nonpositive_block(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "t.wav", tone(440, 0.1, SR), SR)
    with AudioFile.open(path) as audio, pytest.raises(ValueError, match="block_frames"):
        next(audio.blocks(0))


# --- bad files --------------------------------------------------------------------------------


def test_random_bytes_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError) as caught:
        AudioFile.open(path)
    assert str(caught.value) == f"{path}: not a readable audio file (Format not recognised)"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"x\.wav: empty \(0 bytes\)"):
        AudioFile.open(path)


def test_zero_sample_file(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "x.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError, match=r"x\.wav: empty \(0 samples\)"):
        AudioFile.open(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"gone\.wav: no such file"):
        AudioFile.open(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match="not a file"):
        AudioFile.open(tmp_path)


def test_truncated_wav_reads_what_is_there(tmp_path: Path) -> None:
    signal = tone(500, 2.0, SR)
    full = write_wav(tmp_path / "full.wav", signal, SR)
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    # 44-byte header, then 10000 of the 32000 promised samples.
    cut.write_bytes(data[: 44 + 2 * 10000])

    with AudioFile.open(cut) as audio:
        read = np.concatenate([block.copy() for block in audio.blocks(4096)])
        assert audio.frames_read == 10000
    np.testing.assert_allclose(read[:, 0], signal[:10000], atol=PCM16_TOLERANCE)


def test_truncated_flac_stops_without_raising(tmp_path: Path) -> None:
    signal = noise(3.0, SR, 0.1, seed=1)
    full = write_wav(tmp_path / "full.flac", signal, SR)
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])

    with AudioFile.open(cut) as audio:
        assert audio.frames == 48000  # the header still promises the whole file
        read = np.concatenate([block.copy() for block in audio.blocks(1000)])
        assert audio.read_error is not None
        assert 0 < audio.frames_read < 48000
    assert len(read) == audio.frames_read
    # Everything delivered is the real signal, not garbage from the cut.
    np.testing.assert_allclose(read[:, 0], signal[: len(read)], atol=PCM16_TOLERANCE)


# --- block helpers ----------------------------------------------------------------------------


def test_sanitize_replaces_and_counts_nonfinite() -> None:
    block = np.full((100, 2), 0.25, dtype=np.float32)
    block[3, 0] = np.nan
    block[50, 1] = np.inf
    block[99, 0] = -np.inf
    block[7, 1] = np.nan
    assert sanitize(block) == 4
    assert np.isfinite(block).all()
    assert block[3, 0] == 0 and block[50, 1] == 0 and block[99, 0] == 0 and block[7, 1] == 0
    assert np.count_nonzero(block == 0.25) == 196
    assert sanitize(block) == 0


def test_sanitize_clean_block_unchanged() -> None:
    block = noise(0.1, SR, 0.3, seed=2).reshape(-1, 1)
    before = block.copy()
    assert sanitize(block) == 0
    np.testing.assert_array_equal(block, before)


def test_count_clipped() -> None:
    block = np.zeros((10, 1), dtype=np.float32)
    assert count_clipped(block) == 0
    block[:4, 0] = [1.0, -1.0, 1.5, 0.999]
    assert count_clipped(block) == 3
    # Both rails of a 16-bit recording count: +32767/32768 and -1.0.
    block[:4, 0] = [CLIP_LEVEL, -1.0, 0.5, -0.5]
    assert count_clipped(block) == 2
    assert count_clipped(block, level=0.5) == 4


def test_mix_to_mono_into_preallocated_out() -> None:
    out = np.full(8, 9.0, dtype=np.float32)
    block = np.array([[0.2, 0.4], [1.0, -1.0], [-0.5, -0.3]], dtype=np.float32)
    mono = mix_to_mono(block, out)
    assert np.shares_memory(mono, out) and mono.shape == (3,)
    np.testing.assert_allclose(mono, [0.3, 0.0, -0.4], atol=1e-7)
    assert out[3] == 9.0  # only n samples written

    single = mix_to_mono(np.array([[0.1], [0.2]], dtype=np.float32), out)
    np.testing.assert_array_equal(single, np.array([0.1, 0.2], dtype=np.float32))


def test_select_channel_index_and_mix() -> None:
    out = np.empty(16, dtype=np.float32)
    block = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=np.float32)
    third = select_channel(block, 2, out)
    np.testing.assert_array_equal(third, np.array([0.3, 0.6], dtype=np.float32))
    np.testing.assert_allclose(select_channel(block, "mix", out), [0.2, 0.5], atol=1e-7)
    with pytest.raises(AudioError, match="channel 3 requested but it has 3 channel"):
        select_channel(block, 3, out)
    with pytest.raises(AudioError, match="channel -1"):
        select_channel(block, -1, out)


def test_check_channel_names_the_source() -> None:
    check_channel("mix", 1)
    check_channel(1, 2)
    with pytest.raises(AudioError, match=r"^rec\.wav: channel 2 requested"):
        check_channel(2, 2, where="rec.wav")


def test_a_file_without_a_time_does_not_borrow_the_one_before(tmp_path: Path) -> None:
    """In a folder scan, a name with no time used to inherit the previous file's end as its
    start (issue 13, item 11); it has no time unless --start gives one to every file."""
    import threading
    from datetime import timedelta

    from edge.audio.streams import file_streams

    dated = tmp_path / "rec_20261122T100000.wav"
    plain = tmp_path / "plain.wav"
    for path in (dated, plain):
        write_wav(path, np.zeros(8000, dtype=np.float32), 8000)
    stop = threading.Event()
    anchors = [
        s.anchor for s in file_streams([dated, plain], block_seconds=0.5, speed=0, stop=stop)
    ]
    assert anchors == [datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc), None]
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    given = file_streams([plain, plain], block_seconds=0.5, speed=0, stop=stop, start=start)
    assert [s.anchor for s in given] == [start, start + timedelta(seconds=1)]
