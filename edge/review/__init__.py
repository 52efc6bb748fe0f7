"""The review page: look at detections, judge them, export the verdicts for the trainer.

`store` keeps verdicts (SQLite), `scanfolder` reads `soundwatch scan --out` folders (the first
source of detections; the daemon's will be another with the same methods), `export` writes
the verdicts as annotations the trainer reads, `spectrogram` draws PNGs with numpy and zlib,
and `server` is the HTTP server over all of them. Only the top-level wiring (cli, app) imports
this package.
"""
