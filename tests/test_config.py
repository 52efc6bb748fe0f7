"""The daemon config: defaults, refusals that name file, line, dotted path and value, and the
per-label event rules resolved against a real (tone) bundle."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge import schema
from edge.audio.levels import LevelSettings
from edge.builders import REPO_MODELS, bundled_model_roots, label_setups, model_folder
from edge.config import (
    Config,
    EventsConfig,
    LabelRules,
    Loaded,
    MetricsConfig,
    ModelConfig,
    OutputConfig,
    ShadowConfig,
    SourceConfig,
    WebConfig,
    load_config,
)
from edge.errors import ConfigError
from edge.model.bundle import Bundle, load_bundle
from edge.model.rules import EventRules
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.mqtt.settings import MqttConfig
from trainer.toybundle import make_tone_bundle

SOURCE_KEYS = (
    "kind, demo_scene, device, sample_rate_hz, channels, channel, block_seconds,"
    " buffer_seconds, paths, speed, start, device_timeout_seconds, reconnect_min_seconds,"
    " reconnect_max_seconds, max_lag_seconds"
)
TOP_KEYS = (
    "model, source, labels, events, output, mqtt, metrics, levels, clips, web, shadow, log_level"
)


@pytest.fixture(scope="session")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, valid tone bundle (labels tone-1k, tone-3k); do not modify it."""
    return make_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone")


@pytest.fixture(scope="session")
def tone(tone_bundle: Path) -> Bundle:
    return load_bundle(tone_bundle)


def _write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _load(folder: Path, text: str) -> Loaded:
    return load_config(_write(folder, text))


def _problems(folder: Path, text: str) -> list[str]:
    """The ConfigError's lines, with the config path cut to `config.yaml`."""
    path = _write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return str(caught.value).replace(str(path), "config.yaml").splitlines()


def _setups_problems(loaded: Loaded, bundle: Bundle) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        label_setups(loaded, bundle)
    assert loaded.path is not None
    return str(caught.value).replace(str(loaded.path), "config.yaml").splitlines()


# --- defaults ------------------------------------------------------------------------------------


def test_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "model: {path: tone}\nsource:\n  kind: demo\n")
    config = loaded.config
    assert config.model == ModelConfig(path="tone")
    assert config.source == SourceConfig(kind="demo")
    assert config.model.file == "auto"
    assert config.model.threads == 1
    assert config.model.batch_windows == 16
    assert config.model.hop_seconds is None
    assert config.source.channel == "mix"
    assert config.source.block_seconds == 0.05
    assert config.source.buffer_seconds == 30.0
    assert config.labels is None
    assert config.events == EventsConfig()
    assert config.output == OutputConfig()
    assert config.log_level == "info"
    assert loaded.path == tmp_path / "config.yaml"


@pytest.mark.parametrize("text", ["", "\n", "# nothing here yet\n", "---\n"])
def test_empty_file_means_all_defaults(tmp_path: Path, text: str) -> None:
    assert _load(tmp_path, text).config == Config()


def test_no_file_means_defaults(tmp_path: Path) -> None:
    loaded = load_config(None)
    assert loaded.config == Config()
    assert loaded.path is None
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_empty_section_means_its_defaults(tmp_path: Path) -> None:
    # Every key of a section commented out leaves `source:` with no value.
    config = _load(tmp_path, "source:\n  # device: USB\nevents:\n").config
    assert config.source == SourceConfig()
    assert config.events == EventsConfig()


def test_loaded_config_is_frozen(tmp_path: Path) -> None:
    config = _load(tmp_path, "model: {threads: 2}\n").config
    with pytest.raises(AttributeError):
        config.model.threads = 3  # type: ignore[misc]


# --- unknown keys, wrong types, syntax -----------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert _problems(tmp_path, "model: {path: tone}\nmodle: {threads: 2}\n") == [
        f"config.yaml:2: modle: unknown key (known keys: {TOP_KEYS})"
    ]


def test_unknown_nested_key_names_file_line_path_and_known_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "source:\n  kind: device\n  devcie: USB\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}:3: source.devcie: unknown key (known keys: {SOURCE_KEYS})"
    )


def test_unknown_key_in_a_label_override(tmp_path: Path) -> None:
    text = "events:\n  labels:\n    tone-1k:\n      threshhold: 0.7\n"
    assert _problems(tmp_path, text) == [
        "config.yaml:4: events.labels.tone-1k.threshhold: unknown key (known keys: threshold,"
        " off_threshold, median_windows, min_duration_seconds, merge_gap_seconds,"
        " max_duration_seconds, refractory_seconds)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a string where a number is expected
        (
            "model:\n  threads: '4'\n",
            "config.yaml:2: model.threads: expected a whole number, got '4'",
        ),
        ("source:\n  speed: fast\n", "config.yaml:2: source.speed: expected a number, got 'fast'"),
        # YAML true is not a number, though Python's bool is an int
        (
            "model:\n  batch_windows: true\n",
            "config.yaml:2: model.batch_windows: expected a whole number, got true",
        ),
        (
            "source:\n  block_seconds: yes\n",
            "config.yaml:2: source.block_seconds: expected a number, got true",
        ),
        (
            "model:\n  threads: 2.5\n",
            "config.yaml:2: model.threads: expected a whole number, got 2.5",
        ),
        # a list where a mapping is expected, and the other way round
        ("source: [a, b]\n", "config.yaml:1: source: expected a mapping, got [a, b]"),
        (
            "events:\n  labels: [tone-1k]\n",
            "config.yaml:2: events.labels: expected a mapping, got [tone-1k]",
        ),
        ("labels: tone-1k\n", "config.yaml:1: labels: expected a list, got 'tone-1k'"),
        ("output:\n  files: 1\n", "config.yaml:2: output.files: expected true or false, got 1"),
        (
            "source:\n  paths: [a.wav, [b.wav]]\n",
            "config.yaml:2: source.paths[1]: expected text, got [b.wav]",
        ),
        (
            "model:\n  hop_seconds: .nan\n",
            "config.yaml:2: model.hop_seconds: expected a finite number, got .nan",
        ),
        (
            "events:\n  merge_gap_seconds: .inf\n",
            "config.yaml:2: events.merge_gap_seconds: expected a finite number, got .inf",
        ),
        (
            "- model\n- source\n",
            "config.yaml:1: (top level): expected a mapping, got [model, source]",
        ),
    ],
)
def test_wrong_type_names_path_line_and_value(tmp_path: Path, text: str, expected: str) -> None:
    assert _problems(tmp_path, text) == [expected]


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    text = (
        "model:\n"  # 1
        "  threads: many\n"  # 2: wrong type
        "  file: onnx-int4\n"  # 3: not a choice
        "source:\n"  # 4
        "  devcie: USB\n"  # 5: unknown key
        "  speed: -2\n"  # 6: rule
        "events:\n"  # 7
        "  threshold: 1.5\n"  # 8: rule
        "  labels:\n"  # 9
        "    tone-1k: {median_windows: 2}\n"  # 10: rule
        "output:\n"  # 11
        "  print: everything\n"  # 12: not a choice
        "log_levle: debug\n"  # 13: unknown key
    )
    problems = _problems(tmp_path, text)
    assert len(problems) == 8, problems
    assert [p.split(": ")[0] for p in problems] == [  # file order
        f"config.yaml:{line}" for line in (2, 3, 5, 6, 8, 10, 12, 13)
    ]
    assert problems[0] == "config.yaml:2: model.threads: expected a whole number, got 'many'"
    assert problems[1] == (
        "config.yaml:3: model.file: must be one of auto, onnx-int8, onnx-fp32, tflite-int8,"
        " tflite-fp32; got 'onnx-int4'"
    )
    assert problems[2].startswith("config.yaml:5: source.devcie: unknown key (known keys: kind,")
    assert problems[3] == ("config.yaml:6: source.speed: must be within 0..10000, got -2.0")
    assert problems[4] == "config.yaml:8: events.threshold: must be within 0..1, got 1.5"
    assert problems[5] == (
        "config.yaml:10: events.labels.tone-1k.median_windows: must be an odd integer >= 1, got 2"
    )
    assert problems[6] == (
        "config.yaml:12: output.print: must be one of events, seconds, both, none; got 'everything'"
    )
    assert problems[7] == f"config.yaml:13: log_levle: unknown key (known keys: {TOP_KEYS})"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("model:\n  path: tone\nsource: {kind: demo\n", 4),  # unclosed flow mapping
        ("model:\n  path: tone\n   threads: 2\n", 3),  # bad indent
        ("source:\n  paths: [a.wav\n", 3),
        ("model:\n\tpath: tone\n", 2),  # a tab
    ],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith(f"config.yaml:{line}: not valid YAML (")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("model: {threads: !!int many}\n", "invalid literal for int()"),
        ("labels: &loop [*loop]\n", "nested deeper than 50 levels"),
    ],
)
def test_yaml_that_cannot_be_built_is_an_error_not_a_crash(
    tmp_path: Path, text: str, problem: str
) -> None:
    (message,) = _problems(tmp_path, text)
    assert message.startswith("config.yaml: not valid YAML (")
    assert problem in message


def test_a_wrong_type_does_not_crash_the_sections_rules(tmp_path: Path) -> None:
    # The channel rule compares channel with channels: it must not run on the text "two".
    assert _problems(tmp_path, "source:\n  channels: two\n  channel: 1\n") == [
        "config.yaml:2: source.channels: expected a whole number, got 'two'"
    ]


def test_numbers_given_for_text_are_kept_as_written(tmp_path: Path) -> None:
    config = _load(tmp_path, "output:\n  device_id: 1.10\n  dir: 2026\n").config
    assert config.output.device_id == "1.10"
    assert config.output.dir == "2026"


def test_key_written_twice_is_refused(tmp_path: Path) -> None:
    text = "source:\n  kind: demo\nmodel: {threads: 2}\nsource:\n  kind: files\n"
    assert _problems(tmp_path, text) == [
        "config.yaml:4: source: written twice (also on line 1); remove one",
        "config.yaml:4: source.paths: kind is files, so paths must name at least one file or"
        " folder",
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"output:\n  device_id: k\xfcche\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (byte 22)"


# --- choices and cross-field rules ---------------------------------------------------------------


def test_literal_choice(tmp_path: Path) -> None:
    assert _problems(tmp_path, "source:\n  kind: bogus\n") == [
        "config.yaml:2: source.kind: must be one of auto, device, files, demo; got 'bogus'"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "source:\n  kind: files\n",
            "config.yaml:1: source.paths: kind is files, so paths must name at least one file or"
            " folder",
        ),
        (
            "source:\n  channels: 2\n  channel: 2\n",
            "config.yaml:3: source.channel: 2 is not one of the 2 channels",
        ),
        (
            "source:\n  channel: -1\n",
            "config.yaml:2: source.channel: -1 is not one of the 1 channels",
        ),
        (
            "source:\n  speed: -1\n",
            "config.yaml:2: source.speed: must be within 0..10000, got -1.0",
        ),
        (
            "source:\n  start: yesterday\n",
            "config.yaml:2: source.start: not an ISO 8601 time: 'yesterday'"
            " (e.g. 2026-11-22T10:23:14Z)",
        ),
        (
            "source:\n  start: 2026-13-01T00:00:00\n",
            "config.yaml:2: source.start: not an ISO 8601 time: '2026-13-01T00:00:00'"
            " (e.g. 2026-11-22T10:23:14Z)",
        ),
        ("model:\n  threads: 0\n", "config.yaml:2: model.threads: must be within 1..256, got 0"),
        (
            "model:\n  hop_seconds: 0\n",
            "config.yaml:2: model.hop_seconds: must be more than 0 and at most 3600, got 0.0",
        ),
        (
            "source:\n  sample_rate_hz: -8000\n",
            "config.yaml:2: source.sample_rate_hz:"
            " must be more than 0 and at most 2,000,000, got -8000",
        ),
        (
            "events:\n  threshold: 0.4\n  off_threshold: 0.6\n",
            "config.yaml:3: events.off_threshold: must be <= threshold (0.4), got 0.6",
        ),
        (
            "events:\n  hysteresis: -0.1\n",
            "config.yaml:2: events.hysteresis: must be within 0..1, got -0.1",
        ),
        (
            "events:\n  labels:\n    tone-3k: {refractory_seconds: -1}\n",
            "config.yaml:3: events.labels.tone-3k.refractory_seconds:"
            " must be within 0..86400, got -1.0",
        ),
        ("labels: []\n", "config.yaml:1: labels: must name at least one label (or null: all)"),
        (
            "labels:\n  - tone-1k\n  - tone-1k\n",
            "config.yaml:3: labels[1]: 'tone-1k' is listed twice",
        ),
    ],
)
def test_cross_field_rules(tmp_path: Path, text: str, expected: str) -> None:
    assert _problems(tmp_path, text) == [expected]


def test_files_source(tmp_path: Path) -> None:
    source = _load(tmp_path, "source:\n  kind: files\n  paths: [a.wav, rec/]\n  speed: 0\n").config
    assert source.source.paths == ["a.wav", "rec/"]
    assert source.source.speed == 0.0


def test_start_time_unquoted_stays_text(tmp_path: Path) -> None:
    """YAML reads an unquoted ISO time as a datetime; the config keeps what was written."""
    text = "source:\n  kind: files\n  paths: [a.wav]\n  start: 2026-11-22T10:23:14Z\n"
    assert _load(tmp_path, text).config.source.start == "2026-11-22T10:23:14Z"
    text = "source:\n  kind: files\n  paths: [a.wav]\n  start: 2026-11-22\n"
    assert _load(tmp_path, text).config.source.start == "2026-11-22"


def test_channel_mix_each_or_index(tmp_path: Path) -> None:
    assert _load(tmp_path, "source: {channel: mix}\n").config.source.channel == "mix"
    assert _load(tmp_path, "source: {channel: each}\n").config.source.channel == "each"
    config = _load(tmp_path, "source: {channels: 2, channel: 1}\n").config
    assert config.source.channel == 1
    assert isinstance(config.source.channel, int)
    assert _problems(tmp_path, "source: {channels: 2, channel: left}\n") == [
        "config.yaml:1: source.channel: expected mix or each or a whole number, got 'left'"
    ]
    assert _problems(tmp_path, "source: {channels: 2, channel: true}\n") == [
        "config.yaml:1: source.channel: expected mix or each or a whole number, got true"
    ]


def test_device_index_or_name(tmp_path: Path) -> None:
    by_index = _load(tmp_path, "source: {kind: device, device: 3}\n").config.source.device
    assert by_index == 3
    assert isinstance(by_index, int)
    assert _load(tmp_path, "source: {device: USB}\n").config.source.device == "USB"
    quoted = _load(tmp_path, "source: {device: '3'}\n").config.source.device
    assert quoted == "3"  # quoted: a name containing "3", not index 3
    assert _load(tmp_path, "source: {device: null}\n").config.source.device is None
    assert _problems(tmp_path, "source:\n  device: true\n") == [
        "config.yaml:2: source.device: expected a whole number or text, got true"
    ]


# --- paths ---------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    loaded = load_config(_write(folder, "output: {dir: out}\n"))
    assert loaded.resolve(loaded.config.output.dir) == folder / "out"
    assert loaded.resolve("/var/lib/soundwatch") == Path("/var/lib/soundwatch")
    assert loaded.resolve("~/x") == Path.home() / "x"
    assert load_config(None).resolve("out") == Path("out")


def test_model_path_relative_to_the_config(tone_bundle: Path, tmp_path: Path) -> None:
    shutil.copytree(tone_bundle, tmp_path / "bundles" / "mytone")
    folder = tmp_path / "etc"
    folder.mkdir()
    loaded = load_config(_write(folder, "model: {path: ../bundles/mytone}\n"))
    assert model_folder(loaded) == folder / "../bundles/mytone"
    assert load_bundle(model_folder(loaded)).labels == ["tone-1k", "tone-3k"]


def test_bare_model_name_is_never_looked_up_in_the_working_folder(
    tone_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`model.path: tone` is a bundled model (package data), wherever the command runs: a
    models/tone in the working folder is not it (a `pip install --user` once depended on one)."""
    work = tmp_path / "work"
    shutil.copytree(tone_bundle, work / "models" / "tone")
    etc = tmp_path / "etc"
    etc.mkdir()
    loaded = load_config(_write(etc, "model: {path: tone}\n"))
    monkeypatch.chdir(work)
    found = model_folder(loaded)
    assert found.resolve() != (work / "models" / "tone").resolve()
    assert found.parent.resolve() == bundled_model_roots()[0].resolve()

    # A folder of that name next to the config wins over the bundled one.
    shutil.copytree(tone_bundle, etc / "tone")
    assert model_folder(loaded) == etc / "tone"


def test_bare_model_name_in_the_repository_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (REPO_MODELS / "tone").is_dir():
        pytest.skip(f"{REPO_MODELS / 'tone'} not built yet (soundwatch-train tone-bundle)")
    monkeypatch.chdir(tmp_path)  # no models/ here
    loaded = load_config(_write(tmp_path, "model: {path: tone}\n"))
    assert model_folder(loaded) == REPO_MODELS / "tone"
    assert load_bundle(model_folder(loaded)).labels == ["tone-1k", "tone-3k"]


def test_unknown_bare_name_stays_relative_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_config(_write(tmp_path, "model: {path: no-such-model}\n"))
    assert model_folder(loaded) == tmp_path / "no-such-model"


# --- per-label event rules -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def tuned(tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The tone bundle with event defaults of its own and thresholds 0.6 / 0.4."""
    folder = Path(shutil.copytree(tone_bundle, tmp_path_factory.mktemp("tuned") / "tone"))
    manifest = folder / "manifest.yaml"
    data: dict[str, Any] = yaml.safe_load(manifest.read_text())
    data["thresholds"] = {"tone-1k": 0.6, "tone-3k": 0.4}
    data["events"] = {
        "median_windows": 3,
        "min_duration_seconds": 0.2,
        "merge_gap_seconds": 0.3,
        "max_duration_seconds": 60.0,
        "refractory_seconds": 1.0,
    }
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_bundle(folder)


def test_defaults_come_from_the_bundle_manifest(
    tmp_path: Path, tone: Bundle, tuned: Bundle
) -> None:
    loaded = _load(tmp_path, "")
    setups = label_setups(loaded, tuned)
    assert [(s.label, s.index) for s in setups] == [("tone-1k", 0), ("tone-3k", 1)]
    assert setups[0].rules == EventRules(
        threshold=0.6,
        off_threshold=None,
        median_windows=3,
        min_duration_seconds=0.2,
        merge_gap_seconds=0.3,
        max_duration_seconds=60.0,
        refractory_seconds=1.0,
    )
    assert setups[1].rules.threshold == 0.4
    # The tone bundle's own: thresholds 0.5, no min duration, merge gap 0.1 s.
    plain = label_setups(loaded, tone)
    assert plain[0].rules == EventRules(
        threshold=0.5, min_duration_seconds=0.0, merge_gap_seconds=0.1
    )


def test_config_overrides_bundle_then_label_overrides_config(tmp_path: Path, tuned: Bundle) -> None:
    text = (
        "events:\n"
        "  threshold: 0.7\n"
        "  min_duration_seconds: 0.5\n"
        "  hysteresis: 0.2\n"
        "  labels:\n"
        "    tone-3k:\n"
        "      threshold: 0.8\n"
        "      off_threshold: 0.75\n"
        "      median_windows: 5\n"
        "      refractory_seconds: 0\n"
    )
    one_k, three_k = label_setups(_load(tmp_path, text), tuned)
    assert one_k.rules.off_threshold == pytest.approx(0.5)  # 0.7 - hysteresis 0.2
    assert replace(one_k.rules, off_threshold=None) == EventRules(
        threshold=0.7,  # config over the bundle's 0.6
        median_windows=3,  # the bundle's
        min_duration_seconds=0.5,  # config
        merge_gap_seconds=0.3,
        max_duration_seconds=60.0,
        refractory_seconds=1.0,
    )
    assert three_k.rules.threshold == 0.8  # the label's, over config and bundle
    assert three_k.rules.off_threshold == 0.75  # given: hysteresis not applied
    assert three_k.rules.median_windows == 5
    assert three_k.rules.refractory_seconds == 0.0  # 0 overrides the bundle's 1.0
    assert three_k.rules.min_duration_seconds == 0.5  # config layer still applies
    assert three_k.rules.merge_gap_seconds == 0.3


def test_hysteresis_uses_each_labels_own_threshold(tmp_path: Path, tuned: Bundle) -> None:
    one_k, three_k = label_setups(_load(tmp_path, "events: {hysteresis: 0.25}\n"), tuned)
    assert one_k.rules.off_threshold == pytest.approx(0.35)  # 0.6 - 0.25
    assert three_k.rules.off_threshold == pytest.approx(0.15)  # 0.4 - 0.25
    big = label_setups(_load(tmp_path, "events: {hysteresis: 0.9}\n"), tuned)
    assert big[1].rules.off_threshold == 0.0  # clipped at 0


def test_label_filter_keeps_output_order_of_the_config(tmp_path: Path, tone: Bundle) -> None:
    setups = label_setups(_load(tmp_path, "labels: [tone-3k]\n"), tone)
    assert [(s.label, s.index) for s in setups] == [("tone-3k", 1)]


def test_labels_not_in_the_bundle_are_named(tmp_path: Path, tone: Bundle) -> None:
    text = (
        "labels:\n"
        "  - tone-1k\n"
        "  - tone-2k\n"
        "events:\n"
        "  labels:\n"
        "    tone-3k: {threshold: 0.6}\n"
        "    tone-5k: {threshold: 0.6}\n"
    )
    assert _setups_problems(_load(tmp_path, text), tone) == [
        "config.yaml:3: labels[1]: 'tone-2k' is not a label of tone (its labels: tone-1k, tone-3k)",
        "config.yaml:7: events.labels.tone-5k: 'tone-5k' is not a label of tone (its labels:"
        " tone-1k, tone-3k)",
    ]


def test_rule_conflicting_with_a_bundle_threshold_points_at_its_line(
    tmp_path: Path, tuned: Bundle
) -> None:
    # 0.5 is fine for tone-1k (threshold 0.6) but above tone-3k's 0.4.
    text = "events:\n  off_threshold: 0.5\n  labels:\n    tone-1k: {max_duration_seconds: 0.1}\n"
    assert _setups_problems(_load(tmp_path, text), tuned) == [
        "config.yaml:4: events.labels.tone-1k.max_duration_seconds: must be 0 (unlimited) or"
        " >= min_duration_seconds (0.2), got 0.1 (label tone-1k)",
        "config.yaml:2: events.off_threshold: must be <= threshold (0.4), got 0.5 (label tone-3k)",
    ]


# --- the config reference ------------------------------------------------------------------------


def test_describe_gives_every_key_a_help_text() -> None:
    rows = list(schema.describe(Config))
    keys = [key for key, _, _, _ in rows]
    assert len(keys) == len(set(keys))
    for key, default, help_text, _ in rows:
        assert help_text.strip(), f"{key} has no help text"
        assert default, f"{key} has no default shown"
    # Every leaf field of every section is there, and nothing else.
    expected = set()
    for section, cls in (
        ("model", ModelConfig),
        ("source", SourceConfig),
        ("events", EventsConfig),
        ("output", OutputConfig),
        ("mqtt", MqttConfig),
        ("metrics", MetricsConfig),
        ("levels", LevelSettings),
        ("clips", ClipSettings),
        ("web", WebConfig),
        ("shadow", ShadowConfig),
    ):
        expected |= {f"{section}.{name}" for name in cls.__dataclass_fields__}
    expected |= {"labels", "log_level"}
    assert set(keys) == expected
    assert {f"events.{name}" for name in LabelRules.__dataclass_fields__} <= set(keys)
    # Defaults are written as YAML, the way a user would write them in the file.
    shown = {key: default for key, default, _, _ in rows}
    assert shown["model.path"] == "flysong"
    assert shown["model.hop_seconds"] == "null"
    assert shown["output.files"] == "true"
    assert shown["source.paths"] == "[]"
    assert shown["source.block_seconds"] == "0.05"
    # Every number has a range, as the loader checks it (issue 13, item 8).
    allowed = {key: text for key, _, _, text in rows}
    assert allowed["model.threads"] == "1..256"
    assert allowed["source.sample_rate_hz"] == "> 0, <= 2,000,000"
    for key, default in shown.items():
        section, _, name = key.rpartition(".")
        assert yaml.safe_load(default) == _default_of(section, name), key


def _default_of(section: str, name: str) -> Any:
    config = Config()
    holder = getattr(config, section) if section else config
    return getattr(holder, name)


# -- ranges declared on the fields ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mqtt:\n  port: 70000\n", "c.yaml:2: mqtt.port: must be within 1..65535, got 70000"),
        (
            "source:\n  block_seconds: 0.0001\n",
            "c.yaml:2: source.block_seconds: must be within 0.001..10, got 0.0001",
        ),
        ("source:\n  channels: 0\n", "c.yaml:2: source.channels: must be within 1..64, got 0"),
        (
            "events:\n  labels:\n    a: {threshold: -0.5}\n",
            "c.yaml:3: events.labels.a.threshold: must be within 0..1, got -0.5",
        ),
    ],
)
def test_field_bounds_name_key_line_and_value(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        schema.from_text(Config, text, "c.yaml")
    assert str(error.value) == message


def test_bounds_reach_list_items_and_skip_null() -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Gains:
        db: list[float] = schema.field(factory=list, ge=0, zero="off", help="gains, dB")
        limit: int | None = schema.field(None, gt=0, help="most, count")

    assert schema.from_text(Gains, "db: [0, 3]\nlimit: null\n", "g.yaml")[0].db == [0.0, 3.0]
    with pytest.raises(ConfigError) as error:
        schema.from_text(Gains, "db:\n  - 1\n  - -2\nlimit: 0\n", "g.yaml")
    assert str(error.value).splitlines() == [
        "g.yaml:3: db[1]: must be 0 (off) or positive, got -2.0",
        "g.yaml:4: limit: must be positive, got 0",
    ]


def test_every_default_is_inside_its_bounds() -> None:
    from trainer.config import TrainConfig

    # Building the defaults back from their own plain data runs every bound on them.
    for cls in (Config, TrainConfig):
        assert schema.override(cls(), {}) == cls()


def test_event_rule_fields_are_one_list() -> None:
    """The detector's rules, the config's overrides, the bundle's and the trainer's defaults
    name the same fields, with one help text and range each: a rule added to one and not the
    others, or a range changed in one place only, fails here."""
    from dataclasses import fields

    from edge.config import LabelRules
    from edge.model.rules import RULE_FIELDS, EventTiming
    from trainer.config import EventsConfig as TrainEvents

    assert sorted(RULE_FIELDS) == sorted(f.name for f in fields(EventRules))
    assert list(RULE_FIELDS) == [f.name for f in fields(LabelRules)]
    timing = list(RULE_FIELDS[2:])  # the thresholds are chosen per label
    assert [f.name for f in fields(EventTiming)] == timing
    assert [f.name for f in fields(TrainEvents)] == timing
    rule = {f.name: f.metadata["bounds"] for f in fields(EventRules)}
    for shape in (LabelRules, TrainEvents, EventTiming):
        for f in fields(shape):
            assert f.metadata["bounds"] == rule[f.name], (shape.__name__, f.name)


# --- hostile sizes (issue 13, item 8) -------------------------------------------------------------

ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10) if prev else ', '.join(['x'] * 10)}]\n"
    for prev, name in zip(["", *"abcdefg"], "abcdefgh", strict=True)
)  # 8 lines that expand to 10^8 values


def test_an_alias_fan_out_is_refused_before_anything_walks_it(tmp_path: Path) -> None:
    assert _problems(tmp_path, ALIAS_BOMB) == [
        "config.yaml: more than 100,000 values once its aliases are expanded; write the values"
        " out, or use fewer aliases"
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 20_000 + "]" * 20_000, "config.yaml: not valid YAML (nested too deep)"),
        ("a: &a [*a]\n", "config.yaml: not valid YAML (nested deeper than 50 levels at line 1)"),
    ],
)
def test_nesting_that_never_ends_is_one_line(tmp_path: Path, text: str, problem: str) -> None:
    assert _problems(tmp_path, text) == [problem]


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    big = "# padding\n" * 200_000  # 2 MB of comments
    assert _problems(tmp_path, big) == ["config.yaml: 2,000,000 bytes; at most 1,048,576"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "model:\n  batch_windows: 1000000000\n",
            "config.yaml:2: model.batch_windows: must be within 1..4096, got 1000000000",
        ),
        ("model:\n  threads: 1000000\n", "config.yaml:2: model.threads: must be within 1..256"),
        ("source:\n  channels: 100000\n", "config.yaml:2: source.channels: must be within 1..64"),
        (
            "source:\n  buffer_seconds: 1000000000\n",
            "config.yaml:2: source.buffer_seconds: must be within 1..3600",
        ),
        (
            "source:\n  channels: 64\n  sample_rate_hz: 384000\n  buffer_seconds: 600\n",
            "config.yaml:4: source.buffer_seconds: 600 s of 64 channel(s) at 384000 Hz is 54.9 GiB"
            " of ring buffer; at most 1 GiB: fewer seconds or channels",
        ),
    ],
)
def test_numbers_that_would_exhaust_memory_are_refused(
    tmp_path: Path, text: str, problem: str
) -> None:
    lines = _problems(tmp_path, text)  # with what else the value breaks (the ring's size)
    assert any(line.startswith(problem) for line in lines), lines


@pytest.mark.parametrize(
    "device_id", ["../../x", "a/b", "box#1", "box+", "", ".hidden", "-x", "a\x00b", "x" * 65]
)
def test_a_device_id_that_would_leave_its_folder_or_break_a_topic_is_refused(
    tmp_path: Path, device_id: str
) -> None:
    """`../../x` wrote the hourly CSVs two levels above output.dir; `a/b` made folders; `#`
    and `+` are MQTT wildcards (issue 13, item 6)."""
    text = yaml.safe_dump({"output": {"device_id": device_id}})
    (problem,) = _problems(tmp_path, text)
    assert problem.startswith(f"config.yaml:2: output.device_id: {device_id!r} is not a plain")


def test_plain_device_ids_are_taken(tmp_path: Path) -> None:
    for device_id in ("box", "shed-2", "pi4.garden", "A_1", "x" * 64):
        text = yaml.safe_dump({"output": {"device_id": device_id}})
        assert _load(tmp_path, text).config.output.device == device_id
