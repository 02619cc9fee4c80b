"""Contract suites: one per port of the loop (worker/runtime/ports.py), each a class of tests written
against a harness. tests/unit/test_contracts.py runs them on the in-memory fakes, and
tests/integration/test_contracts.py on the real parts (Tansu, embedded PostgreSQL): a fake that
passes its suite keeps the real part's promises, so the loop's tests may use it."""
