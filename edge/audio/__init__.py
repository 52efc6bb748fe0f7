"""Audio in: capture, the ring buffer, live source, files, demo,
conditioning, resampling, levels."""
