"""`bnnx bench`: speed and memory cases measured against their targets, written to bench.json
(`bnnx bench --out bench.json`, or `make bench`). Targets live here, not in tests: each case
records its measured figure next to its target and whether it met it.

Kept apart from the library (as flax keeps `benchmarks/`): nothing under `bnnx/` but `bnnx/cli/`
imports it.
"""

from __future__ import annotations

import resource


def run_benchmark(out: str, only: str | None = None) -> dict:
    """Every case (or those whose name contains `only`) measured, written to `out` and returned:
    one row per `bnnx.bench.common.Result` (case, measured, unit, target, direction, met, figures)."""""
    import jax

    from bnnx.bench.c import run_c_cases
    from bnnx.bench.packed import run_packed_cases
    from bnnx.bench.seeds import seed_cases
    from bnnx.bench.train_step import BINARIZED_VS_FP, CASES, binarized_vs_fp_case, run_case
    from bnnx.io import write_json
    from bnnx.train.provenance import versions

    results = [run_case(case) for case in CASES if only is None or only in case.name]
    results += run_packed_cases(only)
    results += run_c_cases(only)
    results += [binarized_vs_fp_case(name) for name in BINARIZED_VS_FP if only is None or only in name]
    results += seed_cases(only)
    report = {"versions": versions(), "backend": jax.default_backend(), "results": [r.row() for r in results],
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    write_json(out, report)
    return report
