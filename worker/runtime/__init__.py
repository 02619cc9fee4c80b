"""Runtime: what moves messages. The loop sits at the top of this folder (runner, stages, pipeline,
ports and the values between them) and imports no client library; its Kafka, PostgreSQL and service
ends live in `kafka/`, `postgres/` and `service/`, and `wiring` is the one place that builds the real
parts from settings and plugs them into the loop's ports.

Read `runner` first: it polls, micro-batches, hands batches to the stages (`stages`, run by
`pipeline`), and commits offsets once a batch has come out of the last stage.
"""
