"""The MQTT payloads, built from the daemon's records: pure functions, no broker needed.

One builder per topic under `<topic_prefix>/<device id>/` (README "MQTT"); each
payload follows its schema in schemas/*.schema.json, which tests/test_mqtt.py checks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

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


def probabilities_payload(row: SecondRow, labels: Sequence[str]) -> bytes:
    """`probabilities`: each label's score in one second, rounded to 4 places (None: a second
    that was not analysed)."""
    scores = {
        label: None if math.isnan(p) else round(p, 4)
        for label, p in zip(labels, row.scores.tolist(), strict=True)
    }
    time_ = iso(row.time) if row.time else None
    payload: dict[str, object] = {"time": time_, "status": row.status, "scores": scores}
    if row.channel is not None:
        payload["channel"] = row.channel
    return json.dumps(payload).encode()


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
