"""Service: the process around the loop. The health and metrics endpoints (the loop's Observer) and
the supervisor of `run --processes N`; the only runtime folder with an HTTP server and the
Prometheus client (see worker/docs/layout.md)."""
