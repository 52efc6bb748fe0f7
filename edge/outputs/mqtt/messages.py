"""The MQTT payloads, built from the daemon's records: pure functions, no broker needed.

One builder per topic under `<topic_prefix>/<device id>/` (README "MQTT"); each
payload follows its schema in schemas/*.schema.json, which tests/test_mqtt.py checks.
"""

from __future__ import annotations

import functools
import json
import math
import operator
from collections.abc import Sequence

import numpy as np

from edge.records import Event, SecondRow, iso


def status_payload(
    state: str, device: str, model: str, model_version: str, since: str | None
) -> bytes:
    """`status` (retained): `online` at connect, `offline` at a clean stop or as the last will
    (then `since` is None: only the broker knows when the connection went)."""
    payload = {
        "state": state,
        "device": device,
        "model": model,
        "model_version": model_version,
        "since": since,
    }
    return json.dumps(payload).encode()


def event_payload(
    event: Event, model: str, model_version: str, device: str, offset_seconds: float
) -> bytes:
    """`events`: one start or end; `offset_seconds` is where the stream began in its file."""
    return json.dumps(event.to_json(model, model_version, device, offset_seconds)).encode()


# Rows of this many scores and more have their `scores` object written by table look-up:
# BirdNET's 6,522 a second took 5.2 ms as a dict of rounded floats through json.dumps.
TABLE_FROM = 100


def probabilities_payload(row: SecondRow, labels: Sequence[str]) -> bytes:
    """`probabilities`: each label's score in one second, rounded to 4 places (None: a second
    that was not analysed)."""
    time_ = iso(row.time) if row.time else None
    scores = _scores_json(row.scores, labels) if len(labels) >= TABLE_FROM else None
    if scores is None:
        payload: dict[str, object] = {
            "time": time_,
            "status": row.status,
            "scores": {
                label: None if math.isnan(p) else round(p, 4)
                for label, p in zip(labels, row.scores.tolist(), strict=True)
            },
        }
        if row.channel is not None:
            payload["channel"] = row.channel
        return json.dumps(payload).encode()
    # The same text json.dumps gives the dict above: its keys in that order, its separators.
    head = json.dumps({"time": time_, "status": row.status})[:-1]
    channel = "" if row.channel is None else f', "channel": {json.dumps(row.channel)}'
    return f'{head}, "scores": {scores}{channel}}}'.encode()


def _scores_json(scores: np.ndarray, labels: Sequence[str]) -> str | None:
    """The `scores` object as json.dumps writes it, for float32 scores all in [0, 1] or all
    NaN; None for any other row (the dict path writes it)."""
    if scores.dtype != np.float32 or len(scores) != len(labels):
        return None
    keys = _keys(tuple(labels))
    if np.isnan(scores).all():
        return "{" + ", ".join(key + "null" for key in keys) + "}"
    # round(p, 4) is the float nearest k / 10,000, k = p x 10,000 rounded half to even on the
    # exact value (exact in float64 for a float32), and json.dumps writes its repr.
    tens = np.rint(scores.astype(np.float64) * 10000.0)
    if not (tens.min() >= 0 and tens.max() <= 10000) or np.signbit(scores).any():
        return None
    values = np.take(_decimals(), tens.astype(np.intp)).tolist()
    return "{" + ", ".join(map(operator.add, keys, values)) + "}"


@functools.lru_cache(maxsize=4)
def _keys(labels: tuple[str, ...]) -> list[str]:
    """Each label as a JSON key with its separator: `"Turdus merula_Eurasian Blackbird": `."""
    return [json.dumps(label) + ": " for label in labels]


@functools.lru_cache(maxsize=1)
def _decimals() -> np.ndarray:
    """repr(round(k / 10,000, 4)) for k = 0 ... 10,000: "0.0", "0.0001", ... "1.0"."""
    return np.array([repr(round(k / 10000, 4)) for k in range(10001)], dtype=object)


def levels_payload(row: SecondRow, unit: str | None) -> bytes | None:
    """`levels`: one second's broadband and band levels, dB, rounded to 0.01 dB; None when the
    row carries no levels. The key is `dbfs` for digital full scale, `db` once calibrated."""
    levels = row.levels
    if levels is None:
        return None
    unit = unit or "dBFS"
    message: dict[str, object] = {
        "time": iso(row.time) if row.time else None,
        "dbfs" if unit == "dBFS" else "db": round(levels.dbfs_or_db, 2),
        "unit": unit,
        "bands": {band: round(db, 2) for band, db in levels.bands.items()},
        "audio_seconds": round(levels.audio_seconds, 4),
    }
    if row.channel is not None:
        message["channel"] = row.channel
    return json.dumps(message).encode()
