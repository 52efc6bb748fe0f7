"""YAML is parsed with libyaml where PyYAML has it, and with the Python parser otherwise or
when libyaml finds a problem: both must give the same values, lines and error messages."""

from __future__ import annotations

import math

import pytest
import yaml

from edge import yamlfile
from edge.errors import ConfigError
from edge.yamlfile import parse_yaml

TEXT = """\
model: {path: flysong, threads: 2}
source:
  kind: device
  start: 2026-11-22T10:23:14Z
  block_seconds: 0.05
version: 2026.10
labels: [a, b]
events: {labels: {a: {threshold: 0.7}}}
twice: 1
twice: 2
"""
BAD = ["model: [1, 2\n", "a: 1\n  b: 2\n", "a: !!int abc\n", "x: \x00\n"]


def test_libyaml_and_python_parsers_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    assert yaml.__with_libyaml__  # PyYAML's wheels carry it; without it only one path runs
    fast, fast_where = parse_yaml(TEXT, "config.yaml")
    monkeypatch.setattr(yamlfile, "_FastLoader", None)
    slow, slow_where = parse_yaml(TEXT, "config.yaml")
    assert fast == slow
    assert fast["source"]["start"] == "2026-11-22T10:23:14Z"  # times stay text
    assert fast_where.lines == slow_where.lines
    assert fast_where.lines[("source", "block_seconds")] == 5
    assert fast_where.texts == slow_where.texts
    assert fast_where.texts[("version",)] == "2026.10"
    assert fast_where.duplicates == slow_where.duplicates != []


@pytest.mark.parametrize("text", BAD)
def test_a_problem_is_named_by_the_python_parser_either_way(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as fast:
        parse_yaml(text, "config.yaml")
    monkeypatch.setattr(yamlfile, "_FastLoader", None)
    with pytest.raises(ConfigError) as slow:
        parse_yaml(text, "config.yaml")
    assert str(fast.value) == str(slow.value)
    assert str(fast.value).startswith("config.yaml")


def test_values_come_out_whole_from_either_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    # What is parsed is copied before the node tree goes (edge.yamlfile._apart): every type
    # a manifest or config can hold comes out as the loader made it, signs and NaN included.
    text = "a: [-0.0, .nan, -.inf, 0.25, 7, true, null, '', x, 'é']\nb: {c: {d: [e]}}\n"
    for fast in (True, False):
        if not fast:
            monkeypatch.setattr(yamlfile, "_FastLoader", None)
        data, _ = parse_yaml(text, "v.yaml")
        values = data["a"]
        assert str(values[0]) == "-0.0" and values[1] != values[1] and values[2] == -math.inf
        assert values[3:] == [0.25, 7, True, None, "", "x", "é"]
        assert type(values[4]) is int and type(values[5]) is bool
        assert data["b"] == {"c": {"d": ["e"]}}
