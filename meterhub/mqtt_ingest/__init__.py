"""MQTT ingest for push gateways: QoS 1, persistent session, ack after commit, dedupe on (gateway, seq)."""
