"""Packed inference: binary and ternary layers computed on bit-packed words (XNOR-popcount,
sign-select sums) from a `bnnx export` file; see `engine.py` and `kernels.py`."""
