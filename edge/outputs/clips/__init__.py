"""Event clips: a WAV of each event with pre- and post-roll, for people to listen to.

- `settings`: the `clips:` config section;
- `plan`: which audio a clip holds and its file name (pure);
- `store`: the clips folder: whole files only, retention, free space, pause and retry;
- `recorder`: the ring of recent audio that ties them together (a `Sink` in the lane's
  Evidence, edge/outputs/evidence.py).
"""
