"""The bundled model folders (flysong, tone), shipped as package data: `edge.bundled` in an install.

Each subfolder is one bundle; `edge.builders.bundled_model_roots` finds them with
`importlib.resources`, so a bare `model.path: flysong` works from any working folder.
"""
