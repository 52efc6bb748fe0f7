"""From scores to decisions: the analyzer, per-second rows, the event state machine."""
