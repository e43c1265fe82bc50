"""Prometheus metrics: engine, batcher and service counters exported on an HTTP endpoint."""
