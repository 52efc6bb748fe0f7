"""Validation splits: which annotations train and which validate, per fold.

Split by annotation (a share of each label), by whole recording, or by time block within each
recording; near-duplicate marks of one sound are kept on one side, so a validation window is
never one the model trained on.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from trainer.dataset import DataError, Examples


def splits(
    examples: Examples,
    how: str,
    share: float,
    folds: int,
    seed: int,
    block_seconds: float = 30.0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, validation) example indices for each fold (one pair when `folds` is 1).

    how "share": per group (label, negative label), a shuffled `share` of its annotations is
    held out (at least one, and at least one left to train on, when it has two or more); with
    `folds` k, each group is dealt round-robin into k folds. how "recordings": whole recordings
    are held out, stratified the same way (see `_deal_units`). how "blocks": stretches of
    `block_seconds` of each recording (by an annotation's start) are held out the same way, so
    neighbouring windows of one long recording do not sit on both sides. Deterministic for a
    seed.
    """
    rng = np.random.default_rng([seed, 7919])  # its own stream: the split does not move with
    n = len(examples.items)
    fold_of = np.full(n, -1)
    if how in ("recordings", "blocks"):
        units: list[tuple[str, int]] = [
            (
                str(e.annotation.recording),
                int(e.annotation.start_seconds // block_seconds) if how == "blocks" else 0,
            )
            for e in examples.items
        ]
        fold_by_unit = _deal_units(examples, units, share, folds, rng, how)
        fold_of = np.array([fold_by_unit[u] for u in units])
    else:
        groups = np.array([e.group for e in examples.items])
        dealt = 0  # rotate the round-robin across groups, so small groups spread over folds
        for g in range(len(examples.groups)):
            # Near-duplicates (one pulse marked twice) are dealt together: split apart, the
            # validation copy would be a window the model trained on, inflating F1.
            clusters = near_duplicate_clusters(examples, np.flatnonzero(groups == g))
            order = [clusters[i] for i in rng.permutation(len(clusters))]
            held = _deal(len(order), share, folds, start=dealt)
            for cluster, fold in zip(order, held, strict=True):
                fold_of[cluster] = fold
            dealt += len(order)
    out = []
    for fold in range(folds):
        out.append((np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)))
    return out


NEAR_DUPLICATE_SECONDS = 0.01
"""Annotations of one label on one recording this close (or overlapping) are one sound marked
twice, s. Two annotators' marks of one fly-song pulse differ by a few ms; pulses themselves are
~35 ms apart (inter-pulse interval), so 10 ms joins the copies and keeps the pulses apart."""


def near_duplicate_clusters(
    examples: Examples, members: np.ndarray, tolerance_seconds: float = NEAR_DUPLICATE_SECONDS
) -> list[np.ndarray]:
    """`members` (example indices) joined into clusters of overlapping or near annotations.

    Chains join: a mark near one that is near a third puts all three in one cluster. Clusters
    come in the order of their first member, so without near-duplicates the split is the same
    as dealing the members one by one.
    """
    spans = sorted(
        members,
        key=lambda i: (
            str(examples.items[i].annotation.recording),
            examples.items[i].annotation.start_seconds,
        ),
    )
    clusters: list[list[int]] = []
    last_recording, last_end = None, -np.inf
    for i in spans:
        a = examples.items[i].annotation
        if a.recording == last_recording and a.start_seconds <= last_end + tolerance_seconds:
            clusters[-1].append(int(i))
            last_end = max(last_end, a.end_seconds)
        else:
            clusters.append([int(i)])
            last_recording, last_end = a.recording, a.end_seconds
    position = {int(i): k for k, i in enumerate(members)}
    clusters.sort(key=lambda c: min(position[i] for i in c))
    return [np.array(sorted(c, key=position.__getitem__)) for c in clusters]


def _deal_units(
    examples: Examples,
    units: list[tuple[str, int]],
    share: float,
    folds: int,
    rng: np.random.Generator,
    how: str,
) -> dict[tuple[str, int], int]:
    """Fold of each unit (a recording, or a time block of one), stratified: a unit is dealt
    with the others whose rarest group (label) is its own, group by group as the share split
    deals annotations, so a label found in two or more units is held out in some and trained
    on in others (a plain shuffle of 10 classes' recordings left 3 without validation)."""
    groups_of: dict[tuple[str, int], set[int]] = {}
    for unit, e in zip(units, examples.items, strict=True):
        groups_of.setdefault(unit, set()).add(e.group)
    ordered = sorted(groups_of)
    needed = max(2, folds)
    if len(ordered) < needed:
        what = "annotated recordings" if how == "recordings" else "time blocks with annotations"
        raise DataError(
            f"validation by {how} needs at least {needed} {what}, found {len(ordered)}; use the"
            " share split (--validation share)"
        )
    holding = Counter(g for groups in groups_of.values() for g in groups)
    rarest = {u: min(groups_of[u], key=lambda g: (holding[g], g)) for u in ordered}
    fold_of: dict[tuple[str, int], int] = {}
    dealt = 0  # rotate the round-robin across groups, as the share split does
    for group in sorted(set(rarest.values())):
        members = [u for u in ordered if rarest[u] == group]
        order = [members[i] for i in rng.permutation(len(members))]
        held = _deal(len(order), share, folds, start=dealt).tolist()
        fold_of.update(zip(order, held, strict=True))
        dealt += len(order)
    if folds == 1 and 0 not in fold_of.values():  # every label in one unit only
        order = [ordered[i] for i in rng.permutation(len(ordered))]
        fold_of = dict(zip(order, _deal(len(order), share, 1).tolist(), strict=True))
    return fold_of


def _deal(n: int, share: float, folds: int, start: int = 0) -> np.ndarray:
    """Fold numbers for n shuffled items: k folds round-robin, or (one split) 0 = held out."""
    if folds > 1:
        return (np.arange(n) + start) % folds
    held = min(max(round(share * n), 1), n - 1) if n >= 2 else 0
    return np.where(np.arange(n) < held, 0, 1)
