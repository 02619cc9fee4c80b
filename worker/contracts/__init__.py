"""Contracts: the values every other layer shares, and nothing else.

`wire` holds the pydantic models of the events on Kafka (and generates `schemas/`), `values` the
typed values passed between the stages, `errors` the reasons a record is dead-lettered, `tables`
the database tables. This package imports nothing else from the worker.
"""
