"""Training windows, targets, augmentation (trainer/dataset.py) and splits (trainer/splits.py).

No model is trained here; see test_train.py for that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.model.frontend import logmel
from tests.audio import noise, rms, tone, tone_events, write_wav
from trainer.annotations import Annotation
from trainer.config import TrainConfig, with_overrides
from trainer.dataset import (
    Audio,
    Augmenter,
    DataError,
    Windows,
    label_examples,
    recording_features,
    window_features,
)
from trainer.resolve import resolve
from trainer.splits import splits

RATE_HZ = 4000


def _config(**overrides: object) -> TrainConfig:
    return resolve(with_overrides(TrainConfig(), dict(overrides)), RATE_HZ, ["a", "b"])


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s: noise, a 500 Hz tone at 2-4 s, a 1500 Hz tone at 10-11 s."""
    samples = tone_events(RATE_HZ, 20.0, [(2.0, 4.0, 500.0), (10.0, 11.0, 1500.0)], seed=3)
    return write_wav(tmp_path_factory.mktemp("data") / "rec.wav", samples, RATE_HZ, "FLOAT")


def _ann(recording: Path, start: float, end: float, label: str) -> Annotation:
    return Annotation(recording, start, end, label, f"test:{label}")


def _windows(recording: Path, annotations: list[Annotation], config: TrainConfig) -> Windows:
    examples = label_examples(annotations, config.labels, config.mode, config.negative_prefix)
    audio = Audio([recording], RATE_HZ, config.window_samples)
    features = recording_features(audio, config.frontend)
    return Windows(examples.items, features, config, _augmenter(config))


def _augmenter(config: TrainConfig, background: list[np.ndarray] | None = None) -> Augmenter:
    return Augmenter(config.augment, background or [], config.frontend, config.window_samples)


def test_batch_features_equal_logmel_of_each_window_alone() -> None:
    config = _config()
    spec = config.frontend
    rng = np.random.default_rng(0)
    waves = rng.standard_normal((5, config.window_samples)).astype(np.float32)
    batch = window_features(waves, spec)
    assert batch.shape == (5, 1 + (config.window_samples - spec.n_fft) // spec.hop_length, 32)
    for i in range(5):
        np.testing.assert_allclose(batch[i], logmel(waves[i], spec), rtol=0, atol=1e-5)


def test_batches_equal_logmel_of_each_window_cut_from_the_audio(recording: Path) -> None:
    """The features computed once per recording give, for every window drawn, the rows the
    per-window path (cut the waveform, run the frontend on it) gives; ends included."""
    config = _config(**{"augment.gain_db": 0.0, "augment.noise_probability": 0.0})
    annotations = [
        _ann(recording, 0.0, 0.3, "a"),  # windows reaching into the padding before the start
        _ann(recording, 10.0, 11.0, "b"),
        _ann(recording, 19.8, 20.0, "b"),  # and after the end
    ]
    windows = _windows(recording, annotations, config)
    chosen, centres = windows.draw(300, np.random.default_rng(4))
    rows = windows.rows(chosen, centres)
    store = windows.features
    starts = store.sample_starts(windows.signal[chosen], rows)
    # Within half a hop of where the centre asked the window to start: the frame grid.
    asked = np.round(centres * RATE_HZ).astype(np.int64) - config.window_samples // 2
    hop = config.frontend.hop_length
    assert np.abs(starts - asked).max() <= hop // 2
    audio = Audio([recording], RATE_HZ, config.window_samples)
    at = audio.offsets[recording] + starts
    waves = audio.samples[at[:, None] + np.arange(config.window_samples)]
    np.testing.assert_allclose(
        store.windows(rows), window_features(waves, config.frontend), rtol=0, atol=1e-5
    )
    # The window's RMS comes from per-hop energies: within a hop's worth of the exact one.
    exact = np.sqrt(np.mean(np.square(waves, dtype=np.float64), axis=1))
    np.testing.assert_allclose(store.rms(windows.signal[chosen], rows), exact, rtol=0.02)
    x, y = windows.batch(300, np.random.default_rng(4))
    np.testing.assert_array_equal(x, store.windows(rows))
    np.testing.assert_array_equal(y, windows.targets[chosen])


def test_range_windows_are_centred_inside_the_range(recording: Path) -> None:
    config = _config()
    windows = _windows(
        recording, [_ann(recording, 2.0, 4.0, "a"), _ann(recording, 10.0, 11.0, "b")], config
    )
    chosen, centres = windows.draw(2000, np.random.default_rng(1))
    a = centres[chosen == 0]
    assert a.min() >= 2.0 and a.max() <= 4.0
    assert a.min() < 2.05 and a.max() > 3.95  # spread over the whole range
    b = centres[chosen == 1]
    assert b.min() >= 10.0 and b.max() <= 11.0
    # Balanced: each label drawn about half the time.
    assert 0.45 < np.mean(chosen == 0) < 0.55


def test_point_windows_stay_within_the_jitter(recording: Path) -> None:
    config = _config(**{"windows.point_jitter": 0.25})
    windows = _windows(
        recording, [_ann(recording, 3.0, 3.0, "a"), _ann(recording, 10.5, 10.5, "b")], config
    )
    chosen, centres = windows.draw(2000, np.random.default_rng(2))
    offsets = centres[chosen == 0] - 3.0
    limit = 0.25 * config.window_seconds  # 51.2 ms
    assert np.abs(offsets).max() <= limit
    assert offsets.min() < -0.9 * limit and offsets.max() > 0.9 * limit


def test_windows_hold_the_annotated_audio(recording: Path) -> None:
    config = _config(**{"augment.gain_db": 0.0, "augment.noise_probability": 0.0})
    windows = _windows(
        recording, [_ann(recording, 2.0, 4.0, "a"), _ann(recording, 10.0, 11.0, "b")], config
    )
    x, y = windows.batch(64, np.random.default_rng(3))
    # The 500 Hz tone sits in mel bands well below the 1500 Hz one: compare band energy.
    low_band = x[:, :, :12].mean(axis=(1, 2))
    is_a = y[:, 0] == 1
    assert is_a.any() and (~is_a).any()
    assert low_band[is_a].min() > low_band[~is_a].max()


def test_fixed_validation_windows_spread_over_ranges_and_jitter(recording: Path) -> None:
    config = _config(**{"windows.validation_windows": 4})
    annotations = [_ann(recording, 2.0, 4.0, "a"), _ann(recording, 10.0, 10.0, "b")]
    windows = _windows(recording, annotations, config)
    x, y = windows.fixed()
    assert x.shape[0] == 8 and y.shape == (8, 2)
    np.testing.assert_array_equal(y[:4], [[1, 0]] * 4)
    x2, _ = windows.fixed()
    np.testing.assert_array_equal(x, x2)  # fixed: the same windows every time


def test_exclusive_targets_are_one_hot_and_negatives_unused(recording: Path) -> None:
    annotations = [
        _ann(recording, 1, 2, "a"),
        _ann(recording, 3, 4, "b"),
        _ann(recording, 5, 6, "not_a"),
    ]
    examples = label_examples(annotations, ["a", "b"], "exclusive", "not_")
    np.testing.assert_array_equal([e.target for e in examples.items], [[1, 0], [0, 1]])
    assert examples.ignored == {"not_a": 1}


def test_overlapped_targets_mark_unknown_labels_nan(recording: Path) -> None:
    annotations = [
        _ann(recording, 1, 2, "a"),
        _ann(recording, 3, 4, "no-a"),
        _ann(recording, 5, 6, "b"),
    ]
    examples = label_examples(annotations, ["a", "b"], "overlapped", "no-")
    targets = np.array([e.target for e in examples.items])
    np.testing.assert_array_equal(targets, [[1, np.nan], [0, np.nan], [np.nan, 1]])
    assert examples.groups == ["a", "b", "no-a", "no-b"]
    assert examples.counts() == {"a": 1, "b": 1, "no-a": 1, "no-b": 0}


def test_label_without_annotations_is_a_clear_error(recording: Path) -> None:
    with pytest.raises(DataError, match=r"no usable windows for label 'c'.*labels found: a"):
        label_examples([_ann(recording, 1, 2, "a")], ["a", "c"], "exclusive", "not_")


# --- augmentation ------------------------------------------------------------------------------


def _augment(
    config: TrainConfig, waves: np.ndarray, seed: int, background: list[np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features of `waves` before and after `Augmenter.spectra`."""
    x = window_features(waves, config.frontend)
    out = x.copy()
    rms_each = np.sqrt(np.mean(np.square(waves, dtype=np.float64), axis=1))
    _augmenter(config, background).spectra(out, rms_each, np.random.default_rng(seed))
    return x, out


def _energy(features: np.ndarray) -> np.ndarray:
    """Mel energy of each window (what gain, noise and background change), float64."""
    return (np.exp(features.astype(np.float64)) - 1e-6).sum(axis=(1, 2))


def _tone_windows(n: int, config: TrainConfig) -> np.ndarray:
    return np.tile(tone(500.0, config.window_seconds, RATE_HZ, 0.3), (n, 1))


def test_gain_on_features_equals_the_features_of_the_scaled_waveform() -> None:
    config = _config(**{"augment.gain_db": 6.0, "augment.noise_probability": 0.0})
    waves = _tone_windows(200, config)
    x, out = _augment(config, waves, 0)
    gains_db = 10 * np.log10(_energy(out) / _energy(x))  # power spectrum: 10 log10 of g**2
    assert gains_db.min() >= -6.0 - 1e-3 and gains_db.max() <= 6.0 + 1e-3
    assert gains_db.min() < -5.0 and gains_db.max() > 5.0  # uniform over the range
    scaled = waves * (10 ** (gains_db / 20)).astype(np.float32)[:, None]
    np.testing.assert_allclose(out, window_features(scaled, config.frontend), rtol=0, atol=2e-3)


def _unit_energy(config: TrainConfig, rms_wanted: float, seed: int) -> float:
    """Mean mel energy of a window of white noise with this RMS (what a level is measured by)."""
    waves = noise(config.window_seconds * 50, RATE_HZ, rms_wanted, seed=seed)
    windows = waves[: 50 * config.window_samples].reshape(50, config.window_samples)
    return float(_energy(window_features(windows, config.frontend)).mean())


def test_noise_is_added_at_the_drawn_snr_to_the_chosen_share() -> None:
    config = _config(
        **{
            "augment.gain_db": 0.0,
            "augment.noise_probability": 0.5,
            "augment.noise_snr_db": [10.0, 20.0],
        }
    )
    waves = _tone_windows(400, config)
    x, out = _augment(config, waves, 1)
    added = _energy(out) - _energy(x)
    changed = added > 0
    assert 0.4 < changed.mean() < 0.6
    snr_db = 10 * np.log10(_unit_energy(config, rms(waves[0]), 5) / added[changed])
    assert snr_db.min() > 9.7 and snr_db.max() < 20.3
    assert snr_db.min() < 11.0 and snr_db.max() > 19.0
    np.testing.assert_array_equal(out[~changed], x[~changed])


def test_background_is_mixed_at_the_drawn_level() -> None:
    config = _config(
        **{
            "augment.gain_db": 0.0,
            "augment.noise_probability": 0.0,
            "augment.background_probability": 1.0,
            "augment.background_snr_db": [6.0, 6.0],
        }
    )
    waves = _tone_windows(20, config)
    background = [noise(3.0, RATE_HZ, 0.05, seed=9)]
    x, out = _augment(config, waves, 2, background)
    added = _energy(out) - _energy(x)
    level_db = 10 * np.log10(_unit_energy(config, rms(waves[0]), 6) / added)
    np.testing.assert_allclose(level_db, 6.0, atol=0.3)


def test_specaugment_masks_set_bands_and_frames_to_the_window_mean() -> None:
    config = _config(
        **{
            "augment.time_masks": 1,
            "augment.time_mask_frames": 10,
            "augment.freq_masks": 1,
            "augment.freq_mask_bands": 5,
        }
    )
    f = np.random.default_rng(0).standard_normal((50, 40, 32)).astype(np.float32)
    out = f.copy()
    _augmenter(config).features(out, np.random.default_rng(1))
    changed = out != f
    assert changed.any()
    for i in range(50):
        masked = out[i][changed[i]]
        np.testing.assert_allclose(masked, f[i].mean(), rtol=1e-6)
        # One time mask (whole frames, at most 10) and one band mask (whole bands, at most 5).
        frames = changed[i].all(axis=1)
        bands = changed[i].all(axis=0)
        assert frames.sum() <= 10 and bands.sum() <= 5
        np.testing.assert_array_equal(changed[i], frames[:, None] | bands[None, :])


def test_no_augmentation_when_everything_is_off(recording: Path) -> None:
    config = _config(**{"augment.gain_db": 0.0, "augment.noise_probability": 0.0})
    waves = np.random.default_rng(0).standard_normal((8, config.window_samples))
    x, out = _augment(config, waves.astype(np.float32), 0)
    np.testing.assert_array_equal(out, x)


# --- splits ------------------------------------------------------------------------------------


def _many(recordings: list[Path], per_label: dict[str, int]) -> list[Annotation]:
    out = []
    for label, n in per_label.items():
        for i in range(n):
            out.append(_ann(recordings[i % len(recordings)], i, i + 0.5, label))
    return out


def test_share_split_holds_out_a_share_of_every_label(recording: Path) -> None:
    annotations = _many([recording], {"a": 20, "b": 5, "not_a": 3})
    examples = label_examples(annotations, ["a", "b"], "overlapped", "not_")
    ((train, val),) = splits(examples, "share", 0.2, 1, seed=0)
    held = {
        g: sum(examples.items[i].group == k for i in val) for k, g in enumerate(examples.groups)
    }
    assert held == {"a": 4, "b": 1, "not_a": 1, "not_b": 0}
    assert sorted([*train, *val]) == list(range(len(annotations)))
    ((_, val2),) = splits(examples, "share", 0.2, 1, seed=0)
    np.testing.assert_array_equal(val, val2)  # deterministic for a seed
    ((_, val3),) = splits(examples, "share", 0.2, 1, seed=1)
    assert set(val3) != set(val)


def test_folds_partition_the_annotations(recording: Path) -> None:
    examples = label_examples(
        _many([recording], {"a": 10, "b": 7}), ["a", "b"], "exclusive", "not_"
    )
    folds = splits(examples, "share", 0.2, 3, seed=0)
    assert len(folds) == 3
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals) == list(range(17))
    for train, val in folds:
        assert not set(train) & set(val)
        assert {examples.items[i].group for i in val} == {0, 1}  # every label in every fold


def test_recording_split_holds_out_whole_recordings(tmp_path: Path, recording: Path) -> None:
    others = [tmp_path / f"r{i}.wav" for i in range(3)]
    examples = label_examples(
        _many([recording, *others], {"a": 12, "b": 8}), ["a", "b"], "exclusive", "not_"
    )
    ((train, val),) = splits(examples, "recordings", 0.25, 1, seed=0)
    val_recordings = {examples.items[i].annotation.recording for i in val}
    train_recordings = {examples.items[i].annotation.recording for i in train}
    assert len(val_recordings) == 1 and not val_recordings & train_recordings
    with pytest.raises(DataError, match="at least 2 annotated recordings, found 1"):
        one = label_examples(_many([recording], {"a": 4}), ["a"], "exclusive", "not_")
        splits(one, "recordings", 0.2, 1, seed=0)


@pytest.mark.parametrize("folds", [1, 3])
def test_recording_split_is_stratified_by_label(
    tmp_path: Path, recording: Path, folds: int
) -> None:
    """10 classes, 3 recordings each (folders per class, as ESC-50): every class has a
    recording held out and one trained on, with every seed; a plain shuffle of the 30
    recordings left some classes without any validation recording."""
    labels = [f"c{k}" for k in range(10)]
    annotations = [
        _ann(tmp_path / f"{label}-{i}.wav", 0.0, 0.5, label) for label in labels for i in range(3)
    ]
    examples = label_examples(annotations, labels, "exclusive", "not_")
    for seed in range(5):
        for train, val in splits(examples, "recordings", 0.2, folds, seed=seed):
            held = {examples.items[i].annotation.label for i in val}
            trained = {examples.items[i].annotation.label for i in train}
            assert held == trained == set(labels), (seed, folds)
            assert len(val) == 10  # one recording of each class: a share of 1/3, not 0.2


def test_block_split_holds_out_whole_stretches_of_one_recording(recording: Path) -> None:
    """One 300 s recording, an 'a' every 2 s and a 'b' every 10 s: 30 s blocks are held out
    whole, so no validation annotation has a training neighbour in its block; each label is on
    both sides; with one recording the split by recordings is refused, this one is not."""
    annotations = [_ann(recording, t, t + 0.5, "a") for t in range(0, 300, 2)]
    annotations += [_ann(recording, t + 1.0, t + 1.5, "b") for t in range(0, 300, 10)]
    examples = label_examples(annotations, ["a", "b"], "exclusive", "not_")
    with pytest.raises(DataError, match="at least 2 annotated recordings, found 1"):
        splits(examples, "recordings", 0.2, 1, seed=0)
    for seed in range(3):
        ((train, val),) = splits(examples, "blocks", 0.2, 1, seed=seed, block_seconds=30.0)
        block = [int(e.annotation.start_seconds // 30) for e in examples.items]
        held, trained = {block[i] for i in val}, {block[i] for i in train}
        assert not held & trained and held | trained == set(range(10))
        assert len(held) == 2  # a fifth of the ten blocks
        assert {examples.items[i].annotation.label for i in val} == {"a", "b"}
        assert {examples.items[i].annotation.label for i in train} == {"a", "b"}


def test_duplicate_rows_go_and_near_duplicates_stay_on_one_side(
    tmp_path: Path, recording: Path
) -> None:
    """Two annotators: 20 pulses of 'a' and 8 of 'b', 0.5 s apart; the second annotator marked
    3 of them identically and 6 within 4 ms. The identical rows are dropped and counted; each
    near pair is held out (or trained on) as a whole, with every seed and with k folds."""
    from trainer.annotations import load_csv

    rows = ["file,start_seconds,end_seconds,label"]
    pulses = [(0.5 + 0.5 * i, "a") for i in range(20)] + [(12.0 + 0.5 * i, "b") for i in range(8)]
    rows += [f"{recording},{s:.3f},{s:.3f},{label}" for s, label in pulses]
    rows += [f"{recording},{s:.3f},{s:.3f},{label}" for s, label in pulses[2:5]]  # identical
    near = [*pulses[6:11], pulses[21]]
    rows += [f"{recording},{s + 0.004:.3f},{s + 0.004:.3f},{label}" for s, label in near]
    table = tmp_path / "two-annotators.csv"
    table.write_text("\n".join(rows) + "\n")

    loaded = load_csv(table)
    assert len(loaded.annotations) == 28 + 3 + 6 and not loaded.problems
    data, dropped = loaded.without_duplicates()
    assert dropped == 3 and len(data.annotations) == 34
    assert data.counts() == {"a": 25, "b": 9}

    examples = label_examples(data.annotations, ["a", "b"], "exclusive", "not_")
    starts = [round(e.annotation.start_seconds, 3) for e in examples.items]
    pairs = [(starts.index(s), starts.index(round(s + 0.004, 3))) for s, _ in near]
    for seed in range(5):
        for folds in (1, 3):
            for train, val in splits(examples, "share", 0.2, folds, seed=seed):
                held = set(val.tolist())
                assert sorted([*train, *val]) == list(range(34))
                straddling = [p for p in pairs if (p[0] in held) != (p[1] in held)]
                assert not straddling, (seed, folds, straddling)
