"""The embedded default: an in-process bus and an in-memory feature store (no Kafka, no Redis)."""
