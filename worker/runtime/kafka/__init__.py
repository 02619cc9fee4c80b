"""Kafka: the runtime's Kafka end. The consumer behind the Source port, the dead-letter sink, the
relay's publisher, the Schema Registry check and the broker probe; the only runtime folder that
imports kafka-python (see worker/docs/layout.md)."""
