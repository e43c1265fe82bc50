"""Kafka transport: topic settings, aiokafka helpers, the faust topology, sinks, the replay publisher."""
