"""Schedules defined by the run: the same method config at two run lengths ends with its
scheduled values at the same points of their schedule (BMD's β, Bop's γ·T, BNEW's expansion),
and BNEW binarizes (≥ 99 % of the binary-bound weights at ±1) only in the last quarter of its
ramp at both lengths."""

from __future__ import annotations

import numpy as np
import pytest

from bnnx.methods.base import epoch_boundaries
from bnnx.methods.bop import Bop
from bnnx.train.loop import train

TINY = ("model.hidden=[64,64]", "checkpoint_every=100")
SHORT, LONG = 4, 16
BNEW_STAGES = (0.25, 0.5, 0.125, 0.125)  # ramp boundaries on whole quarters at 8 and 32 epochs


def _run(compose, digits, tmp_path, epochs, *overrides):
    config = compose(*overrides, f"epochs={epochs}", *TINY, f"out_dir={tmp_path / f'{epochs}'}")
    result = train(config, dataset=digits)
    assert result.status == "completed"
    return result.metrics, epochs * digits.steps_per_epoch(config.batch_size)


def _matching(short, long):
    """Rows of the short and the long run that end at the same fraction of their runs."""
    ratio = len(long) // len(short)
    return [(row, long[(k + 1) * ratio - 1]) for k, row in enumerate(short)]


def test_bmd_beta_at_the_same_fractions(compose, digits, tmp_path):
    short, _ = _run(compose, digits, tmp_path, SHORT, "method=bmd")
    long, _ = _run(compose, digits, tmp_path, LONG, "method=bmd")
    pairs = _matching(short, long)
    np.testing.assert_allclose([a["beta"] for a, _ in pairs], [b["beta"] for _, b in pairs], rtol=1e-5)
    assert short[-1]["beta"] == pytest.approx(2e4, rel=1e-5)  # β_end at the end of either run


def test_bop_gamma_horizon_at_the_same_fractions(compose, digits, tmp_path):
    overrides = ("method=bop", "method.gamma_decay_every=0.25")
    short, short_steps = _run(compose, digits, tmp_path, SHORT, *overrides)
    long, long_steps = _run(compose, digits, tmp_path, LONG, *overrides)
    # γ·T: the momentum's time constant as a fraction of the run (γ logged at each epoch's last step)
    scaled = [(a["gamma"] * short_steps, b["gamma"] * long_steps) for a, b in _matching(short, long)]
    np.testing.assert_allclose(*zip(*scaled), rtol=1e-5)
    horizon = Bop().gamma_horizon  # the default: γ·T = 1/horizon, then ×0.1 each quarter of the run
    np.testing.assert_allclose([s for s, _ in scaled], [0.1**k / horizon for k in range(SHORT)], rtol=1e-5)


def _ramp_rows(rows, epochs):
    """Rows of BNEW's ramp by the fraction of the ramp done at their end."""
    ramp_start, lock, _, _ = epoch_boundaries(BNEW_STAGES, epochs)
    return {(row["epoch"] + 1 - ramp_start) / (lock - ramp_start): row for row in rows
            if ramp_start <= row["epoch"] < lock}


def test_bnew_binarizes_in_the_last_quarter_of_its_ramp(compose, digits, tmp_path):
    stages = "method.stages=[" + ",".join(map(str, BNEW_STAGES)) + "]"
    ramps = {epochs: _ramp_rows(_run(compose, digits, tmp_path, epochs, "method=bnew", stages)[0], epochs)
             for epochs in (2 * SHORT, 2 * LONG)}
    for epochs, ramp in ramps.items():
        assert max(ramp) == 1.0 and min(ramp) <= 0.25
        shares = {u: row["binary_fraction"] for u, row in ramp.items()}
        assert all(share < 0.99 for u, share in shares.items() if u <= 0.75), (epochs, shares)
        assert shares[1.0] >= 0.99, (epochs, shares)
        assert ramp[1.0]["expansion"] == pytest.approx(3e3, rel=1e-4)  # the configured expansion at the lock
    # the expansion so far is one curve in the ramp's fraction, up to the steps' discreteness
    short, long = ramps[2 * SHORT], ramps[2 * LONG]
    np.testing.assert_allclose([np.log(short[u]["expansion"]) for u in sorted(short)],
                               [np.log(long[u]["expansion"]) for u in sorted(short)], rtol=0.05)
