"""feedback-triage worker: Kafka feedback events -> BERT sentiment -> Postgres, escalations and dead letters."""

__version__ = "0.1.0"
