"""bnnx.xla_cpu's lowering of JAX's threefry hash on CPU gives exactly JAX's own bits."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np

import bnnx.xla_cpu  # noqa: F401

DRAWS = """
import jax, jax.numpy as jnp, numpy as np, sys
key = jax.random.key(7)
def draws(key):
    a, b, c = jax.random.split(key, 3)
    return {
        "bits4d": jax.random.bits(a, (3, 3, 20, 12)), "bits2d": jax.random.bits(b, (5, 7)),
        "bits1d": jax.random.bits(c, (13,)), "bits0d": jax.random.bits(c, ()), "empty": jax.random.bits(c, (0, 4)),
        "bits64": jax.random.bits(a, (4, 6), jnp.uint64) if jax.config.jax_enable_x64 else jnp.zeros(()),
        "truncated": jax.random.truncated_normal(b, -2.0, 2.0, (3, 3, 8, 16)),
        "uniform": jax.random.uniform(c, (2, 3, 4, 5, 6)), "perm": jax.random.permutation(a, 50),
        "vmapped": jax.vmap(lambda k: jax.random.normal(k, (4, 5)))(jax.random.split(b, 3)),
        "folded": jax.random.bits(jax.random.fold_in(a, 3), (6, 6)),
    }
out = {k: np.asarray(v) for k, v in jax.jit(draws)(key).items()}
out.update({"eager_" + k: np.asarray(v) for k, v in draws(key).items() if k in ("bits4d", "truncated")})
np.savez(sys.argv[1], **out)
"""


def test_flat_lowering_gives_jaxs_own_bits(tmp_path):
    """The same draws in two fresh processes: JAX's lowering, then bnnx's."""
    for name, prefix in (("jax", ""), ("bnnx", "import bnnx.xla_cpu\n")):
        subprocess.run([sys.executable, "-c", prefix + DRAWS, str(tmp_path / f"{name}.npz")], check=True)
    expected, got = np.load(tmp_path / "jax.npz"), np.load(tmp_path / "bnnx.npz")
    assert len(expected) == 13 and sorted(expected) == sorted(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_a_multi_dimensional_draw_hashes_a_flat_vector_here():
    """Not vacuous: the lowered program hashes 3*4*5 = 60 counters as one vector."""
    text = jax.jit(lambda key: jax.random.bits(key, (3, 4, 5))).lower(jax.random.key(0)).as_text()
    assert "tensor<60xui32>" in text
