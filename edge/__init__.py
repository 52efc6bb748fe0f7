"""soundwatch edge: listen, score, detect. Runs on the device; never imports torch."""

__version__ = "0.1.0"
