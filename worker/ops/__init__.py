"""Operator tools: the verbs around the worker rather than in its data path.

`migrate` applies the schema, `send` publishes feedback files to the input topic, `trends`
answers trend questions (`report`), `acks` marks escalations handled and records reviewers'
verdicts (`ack`), `export` writes those verdicts as labelled data, `quality/` measures and
calibrates the model on labelled files (`evaluate`, `calibrate`). `observability/`
holds the Prometheus scrape config and the Grafana dashboard that docker compose mounts.
"""
