"""The model: the bundle, the log-mel frontend and the runtime backends (the trainer
uses them too)."""
