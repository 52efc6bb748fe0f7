"""Where results go: files, clips, the evidence tap, MQTT."""
