"""The benchmark of docs/BENCHMARKS.md (`python -m app bench`), beside the product and never
shipped with it.

It runs a private stack on this machine (its own database and Redis key prefix, an API and
fleets it starts and stops) and measures each workload several times. Speed is reported here,
never asserted in a test. Its read-outs query Postgres and Redis directly (`readout`,
`ceiling`): they measure the product from outside, so they are not part of its layers.
"""
