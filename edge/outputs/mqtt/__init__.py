"""MQTT: the sink, its broker client, the outbox, Home Assistant discovery, the settings."""
