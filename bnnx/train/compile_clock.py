"""Seconds JAX spends tracing, lowering and compiling, from jax.monitoring's compile events.

A run records them per epoch (`compile_time_s`) so that wall-time measures such as time to
accuracy (bnnx/sweeps/timing.py) can leave out this one-off cost: it dominates small runs (a digits
epoch trains in 0.03 s after 2 s of compilation) and differs between methods whose compiled
graphs differ, while the papers' PyTorch timings have no such term.
"""

from __future__ import annotations

import threading

from jax import monitoring

COMPILE_EVENTS = frozenset({
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
})

_lock = threading.Lock()
_total = 0.0
_listening = False


def _on_event(event: str, duration_secs: float, **_: str | int) -> None:
    global _total
    if event in COMPILE_EVENTS:
        with _lock:
            _total += duration_secs


def compile_seconds() -> float:
    """Compile seconds of this process so far; the first call starts the count (call it before
    the work to be measured, and take differences)."""
    global _listening
    with _lock:
        if not _listening:
            monitoring.register_event_duration_secs_listener(_on_event)
            _listening = True
        return _total
