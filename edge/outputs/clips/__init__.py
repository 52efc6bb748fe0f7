"""Event clips: a WAV of each event with pre- and post-roll, for people to listen to.

- `settings`: the `clips:` config section;
- `plan`: which audio a clip holds and its file name (pure);
- `store`: the clips folder: whole files only, retention, free space, pause and retry;
- `recorder`: the ring of recent audio that ties them together (a `Sink` in the lane's
  Evidence, edge/outputs/evidence.py).
"""

from edge.outputs.clips.plan import PlannedClip, clip_path
from edge.outputs.clips.recorder import ClipRecorder
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.clips.store import PARTIAL_SUFFIX, ClipStopped, ClipStore, Kept, prune

__all__ = [
    "PARTIAL_SUFFIX",
    "ClipRecorder",
    "ClipSettings",
    "ClipStopped",
    "ClipStore",
    "Kept",
    "PlannedClip",
    "clip_path",
    "prune",
]
