"""The review page: look at detections, judge them, export the verdicts for the trainer.

`store` keeps verdicts (SQLite). Sources of detections: `scanfolder` reads `soundwatch scan
--out` folders, `daemonfolder` a running daemon's outputs and clips (both on
`scanfolder.OutputFolder`). `now` reads the daemon's last hour for the Now page, `infer` scores
posted WAVs through `scan`, `export` writes the verdicts as annotations the trainer reads,
`spectrogram` draws PNGs with numpy and zlib, `server` is the HTTP server over all of them and
`daemon` runs it inside `soundwatch run` (`web:`). Only the top-level wiring (cli, app,
preflight) imports this package.
"""
