"""bnnx: train binarized (1-bit) and ternary neural networks in JAX.

Submodules are imported on demand so that `import bnnx` stays cheap.
"""

__version__ = "0.1.0"
