"""bnnx: train binarized (1-bit) and ternary neural networks in JAX.

Submodules are imported on demand so that `import bnnx` stays cheap.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "binarize":  # bnnx.binarize(model, rules, policy), without importing flax at `import bnnx`
        from bnnx.binarizer import binarize

        return binarize
    raise AttributeError(f"module 'bnnx' has no attribute {name!r}")
