"""`bnnx bench`: speed and memory cases measured against their targets, written to bench.json.

Kept apart from the library (as flax keeps `benchmarks/`): nothing under `bnnx/` but `bnnx/cli/`
imports it.
"""
