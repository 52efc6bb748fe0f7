"""soundwatch trainer: annotated recordings -> quantized model bundles. Runs on a workstation."""
