"""What the training loop tells its observers (sign tracker, TensorBoard, W&B, MLflow).

The loop calls every observer in its list the same way and never names one:

- `step(step, values)`: every `log_every_steps` train steps, the step's training loss and the
  scheduled values (lr, γ, …), already on the host;
- `epoch_end(state, epoch) -> dict`: after evaluation; what it returns joins the epoch's row;
- `row(step, row)`: the finished row, as written to metrics.jsonl;
- `finish(run_dir, summary)`: once, after summary.json is written.
"""

from __future__ import annotations

from pathlib import Path


class Observer:
    def step(self, step: int, values: dict[str, float]) -> None:
        pass

    def epoch_end(self, state, epoch: int) -> dict[str, float]:
        return {}

    def row(self, step: int, row: dict) -> None:
        pass

    def finish(self, run_dir: Path, summary: dict) -> None:
        pass


def scalars(values: dict) -> dict[str, float]:
    """The numeric entries of a row or summary (lists, strings and None left out)."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
