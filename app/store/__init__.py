"""Postgres: the engine of this process, the models, and every query Jobfleet runs."""
