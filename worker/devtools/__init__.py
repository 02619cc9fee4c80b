"""Development tools: what runs the worker on one machine for a demo, a benchmark or a test.

`local_services` starts an embedded PostgreSQL and a Tansu broker, `demo` runs the whole data
path on them, `bench` measures the classifier and the worker. Nothing in the runtime imports this.
"""
