"""The MQTT payload JSON Schemas, shipped as package data: `edge.payload_schemas` in an install."""
