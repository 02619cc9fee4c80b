"""Runtime: what moves messages. The runner's loop, the stages it drives, and their Kafka, PostgreSQL
and HTTP ends. `wiring` is the one place that builds the real parts from settings.

Read `runner` first: it polls, micro-batches, hands batches to the stages (`stages`, run by
`pipeline`), and commits offsets once a batch has come out of the last stage.
"""
