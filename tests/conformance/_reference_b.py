"""Plain-NumPy references for the STE, BMD, BNEW, PPT and distillation conformance tests.

Written from the papers' update rules and the official code, never from bnnx's code: a tiny MLP
(Dense → BN → hardtanh per hidden layer, Dense → BN out; BinaryNet's MNIST net), its forward and
backward pass by hand in float64, Adam as in PyTorch's `torch.optim.Adam` (the optimizer of the
official BMD code, kartikgupta-at-anu/md-bnn, and of the BNEW poster's "in practice Adam"), and
the helpers that drive bnnx through its public API (compose a config, build the experiment, run
its jitted train step on the same batches).
"""

from __future__ import annotations

import numpy as np

HIDDEN = (12, 12)  # layer 0 real (first), layer 1 binary (hidden), layer 2 real (last)
BATCH = 32
BN_EPS, BN_MOMENTUM = 1e-5, 0.9  # the MLP's BatchNorm (BinaryNet's MNIST net)


def sign(x):
    """sign with sign(0) = +1 (bnnx's convention; md-bnn's torch.sign maps 0 to 0: a measure-zero case)."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


# ---- driving bnnx through its public API --------------------------------------------------

def experiment(digits, method: str, *overrides, epochs: int = 2, hidden=HIDDEN, batch: int = BATCH):
    from bnnx.config.compose import compose_config
    from bnnx.train.experiment import build_experiment

    config = compose_config([f"method={method}", "model=mlp", f"model.hidden=[{','.join(map(str, hidden))}]",
                             f"epochs={epochs}", f"batch_size={batch}", *overrides])
    return build_experiment(config, dataset=digits)


def batches(experiment, epoch: int):
    """The epoch's training batches as the loop reads them, and their normalized inputs."""
    config = experiment.config
    out = []
    for images, labels, weights in experiment.dataset.train_batches(epoch, config.batch_size, config.seed):
        x = np.asarray(experiment.dataset.normalize(images), np.float64)
        out.append(((images, labels, weights), x.reshape(x.shape[0], -1), np.asarray(labels), np.asarray(weights)))
    return out


def host(tree):
    """A float64 NumPy copy of a pytree (the jitted step donates its input state)."""
    import jax

    return jax.tree.map(lambda a: np.array(a, np.float64), tree)


def step(experiment, state, batch):
    state, _ = experiment.train_step(state, batch, experiment.loss)
    return state


# ---- the MLP by hand ------------------------------------------------------------------------

def layer_names(n_layers: int):
    return [(f"QuantDense_{i}", f"BatchNorm_{i}") for i in range(n_layers)]


def mlp_forward(params, x, seen, binary_inputs, stats=None):
    """Training-mode forward. `seen[i]`: the kernel layer i's forward sees (its quantized kernel
    or the latent one); `binary_inputs[i]`: whether its inputs are binarized (sign). With `stats`
    (running mean, var per layer) the forward is inference mode. Returns logits and a cache."""
    n = len(seen)
    h, cache = x, []
    for i, (_, bn) in enumerate(layer_names(n)):
        a = sign(h) if binary_inputs[i] else h
        z = a @ seen[i]
        if stats is None:
            mean, var = z.mean(0), z.var(0)
        else:
            mean, var = stats[i]
        zhat = (z - mean) / np.sqrt(var + BN_EPS)
        y = params[bn]["scale"] * zhat + params[bn]["bias"]
        cache.append(dict(h=h, a=a, z=z, mean=mean, var=var, zhat=zhat, y=y))
        h = np.clip(y, -1.0, 1.0) if i < n - 1 else y
    return h, cache


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def cross_entropy(logits, labels, weights):
    """Mean CE over the batch's weighted examples, and its gradient w.r.t. the logits."""
    p = softmax(logits)
    onehot = np.eye(logits.shape[-1])[labels]
    total = max(weights.sum(), 1.0)
    value = float(np.sum(-np.log(np.sum(p * onehot, -1)) * weights) / total)
    return value, (p - onehot) * weights[:, None] / total


def mlp_backward(params, seen, cache, dlogits, binary_inputs):
    """Gradients w.r.t. the seen kernels and the BN parameters (by layer name)."""
    n = len(seen)
    grads, dh = {}, dlogits
    for i in reversed(range(n)):
        dense, bn = layer_names(n)[i]
        c = cache[i]
        dy = dh * (np.abs(c["y"]) < 1.0) if i < n - 1 else dh  # hardtanh
        grads[bn] = {"scale": np.sum(dy * c["zhat"], 0), "bias": np.sum(dy, 0)}
        dzhat = dy * params[bn]["scale"]
        m = dzhat.shape[0]
        dz = (m * dzhat - dzhat.sum(0) - c["zhat"] * np.sum(dzhat * c["zhat"], 0)) / (m * np.sqrt(c["var"] + BN_EPS))
        grads[dense] = {"kernel": c["a"].T @ dz}
        da = dz @ seen[i].T
        dh = da * (np.abs(c["h"]) <= 1.0) if binary_inputs[i] else da  # sign STE on the inputs
    return grads


def new_stats(stats, cache, n):
    """Running BN statistics after one training step: μ ← m·μ + (1 − m)·batch mean (biased var)."""
    out = {}
    for i, (_, bn) in enumerate(layer_names(n)):
        c = cache[i]
        out[bn] = {"mean": BN_MOMENTUM * stats[bn]["mean"] + (1 - BN_MOMENTUM) * c["mean"],
                   "var": BN_MOMENTUM * stats[bn]["var"] + (1 - BN_MOMENTUM) * c["var"]}
    return out


# ---- Adam (torch.optim.Adam) ----------------------------------------------------------------

class Adam:
    """Per-array Adam: m ← b1·m + (1 − b1)·g, v ← b2·v + (1 − b2)·g², step η·m̂ / (√v̂ + ε)."""

    def __init__(self, b1=0.9, b2=0.999, eps=1e-8):
        self.b1, self.b2, self.eps = b1, b2, eps
        self.m, self.v, self.t = {}, {}, {}

    def direction(self, key, g):
        """m̂ / (√v̂ + ε) after folding in g (the step without the learning rate)."""
        m = self.b1 * self.m.get(key, 0.0) + (1 - self.b1) * g
        v = self.b2 * self.v.get(key, 0.0) + (1 - self.b2) * g * g
        t = self.t.get(key, 0) + 1
        self.m[key], self.v[key], self.t[key] = m, v, t
        return (m / (1 - self.b1**t)) / (np.sqrt(v / (1 - self.b2**t)) + self.eps)


def flat_items(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flat_items(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def set_leaf(tree, path, value):
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def get_leaf(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def assert_tree_close(actual, expected, atol=1e-5, rtol=1e-5):
    for path, value in flat_items(expected):
        np.testing.assert_allclose(np.asarray(get_leaf(actual, path), np.float64), value, atol=atol, rtol=rtol,
                                   err_msg="/".join(path))


def paper_overrides(sweep: str, axis: str, key: str) -> list[str]:
    """The overrides the paper preset of `sweeps/<sweep>.yaml` gives one value of an axis."""
    from pathlib import Path

    import yaml

    data = yaml.safe_load((Path(__file__).parents[2] / "sweeps" / f"{sweep}.yaml").read_text())
    value = next(v for a in data["axes"] if a["name"] == axis for v in a["values"] if v["key"] == key)
    return list(value.get("presets", {}).get("paper", {}).get("overrides", []))


def drop_constant_inputs(tree, data):
    """`tree` without the first kernel's rows for input pixels constant within some batch (the
    digits' blank corners): BN removes their contribution, so their gradient is 0 analytically
    but float32 rounding noise in bnnx, which Adam's first step normalizes to ±η."""
    varying = np.all([np.ptp(x, axis=0) > 0 for _, x, _, _ in data], axis=0)
    out = {k: dict(v) for k, v in tree.items()}
    if "QuantDense_0" in out:
        out["QuantDense_0"]["kernel"] = np.asarray(tree["QuantDense_0"]["kernel"])[varying]
    if "BatchNorm_0" in out and "mean" in out["BatchNorm_0"]:
        del out["BatchNorm_0"]["mean"]  # the same noise times the constant pixels shifts layer 0's batch mean
    return out
