"""NumPy references for ILB and RPR, written from the papers and the official ILB code, not from bnnx.

- ILB: Cheng-Chou Lan, "Iterative Training: Finding Binary Weight Deep Neural Networks with Layer
  Binarization", arXiv 2111.07046 (2021); official code rakutentech/iterative_training
  (train.py's loop, models/layercontrol.py's binarize_layer, models/binary_control.py,
  main.py's add_optimizer_scheduler).
- RPR: Cavigelli and Benini, "Random Partition Relaxation for Training Binary and Ternary Weight
  Neural Networks", arXiv 2001.01091 (sections 3.1 and 4.2).

The network is the official Mlp3's shape: Linear → BatchNorm1d (training mode, biased batch
variance, eps 1e−5) → ReLU per hidden layer, Linear → BatchNorm1d → log-softmax + NLL (the mean
cross-entropy). The official layers carry a bias before the BN; in training mode the BN removes it
exactly (its gradient is 0), so the reference leaves it out.
"""

from __future__ import annotations

import numpy as np

EPS_BN = 1e-5


def mlp_loss_and_grads(x, labels, kernels, scales, biases):
    """Mean cross-entropy and its gradients w.r.t. the kernels the forward pass uses, and the BN
    scales and biases (float64)."""
    caches, h = [], np.asarray(x, np.float64)
    for i, (w, g, b) in enumerate(zip(kernels, scales, biases)):
        z = h @ w
        mu, var = z.mean(0), z.var(0)
        inv = 1.0 / np.sqrt(var + EPS_BN)
        xhat = (z - mu) * inv
        y = g * xhat + b
        last = i == len(kernels) - 1
        caches.append((h, xhat, inv, y))
        h = y if last else np.maximum(y, 0.0)
    logits = h - h.max(1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    n = len(labels)
    loss = -np.mean(np.log(probs[np.arange(n), labels]))
    dy = probs.copy()
    dy[np.arange(n), labels] -= 1.0
    dy /= n
    grads_w, grads_g, grads_b = [], [], []
    for i in reversed(range(len(kernels))):
        h_in, xhat, inv, y = caches[i]
        if i != len(kernels) - 1:
            dy = dy * (y > 0)
        grads_g.insert(0, (dy * xhat).sum(0))
        grads_b.insert(0, dy.sum(0))
        dxhat = dy * scales[i]
        dz = inv / n * (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
        grads_w.insert(0, h_in.T @ dz)
        dy = dz @ kernels[i].T
    return loss, grads_w, grads_g, grads_b


def torch_sign(w):
    """torch.sign, as the official BinaryController uses it (sign(0) = 0)."""
    return np.sign(w)


class TorchAdam:
    """torch.optim.Adam (β = 0.9, 0.999, eps 1e−8, no weight decay) over a list of arrays."""

    def __init__(self, params, lr):
        self.lr, self.t = lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, params, grads, hold=None):
        """One step; `hold[i]` (1 = held) keeps both the value and the moments of those entries."""
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            m = 0.9 * self.m[i] + 0.1 * g
            v = 0.999 * self.v[i] + 0.001 * g * g
            update = self.lr * (m / (1 - 0.9 ** self.t)) / (np.sqrt(v / (1 - 0.999 ** self.t)) + 1e-8)
            if hold is not None and hold[i] is not None:
                m, v = np.where(hold[i], self.m[i], m), np.where(hold[i], self.v[i], v)
                update = np.where(hold[i], 0.0, update)
            self.m[i], self.v[i] = m, v
            out.append(p - update)
        return out


class TorchSGD:
    """torch.optim.SGD(lr, momentum, weight_decay): b ← μ·b + (g + wd·w) (b₁ = g + wd·w), w ← w − lr·b."""

    def __init__(self, params, momentum, weight_decay):
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = [None for _ in params]

    def step(self, params, grads, lr):
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            d = g + self.weight_decay * p
            self.buffers[i] = d if self.buffers[i] is None else self.momentum * self.buffers[i] + d
            out.append(p - lr * self.buffers[i])
        return out


def ilb_binary_layers(order, epoch, epochs_per_layer):
    """The layers binary during `epoch` (0-based): binarize_layer() runs before each epoch and turns
    layer ⌊epochs_ / epochs_per_layer⌋ binary, epochs_ counting the calls before it."""
    binary = set()
    for calls in range(epoch + 1):
        layer = calls // epochs_per_layer
        if layer < len(order):
            binary.add(order[layer])
    return binary


def multistep_lr(lr, milestones, gamma, epoch):
    """The lr of 0-based `epoch` when MultiStepLR.step() runs before each epoch (train.py): the
    scheduler's last_epoch is epoch + 1 while that epoch trains."""
    return lr * gamma ** sum(1 for m in milestones if m <= epoch + 1)


def ilb_train(x_batches, y_batches, kernels, scales, biases, order, epochs, epochs_per_layer, optimizer, lr_of_epoch,
              box=None):
    """The official loop: per epoch scheduler step, binarize_layer, then per batch forward with
    sign(w) in binary layers, the gradient w.r.t. the used weight applied unchanged to the latent
    weight (restore_full_precision before optimizer.step), clip_weights() a no-op.
    `box` = c instead gives BinaryConnect's reading (Courbariaux et al. 2015): in binary layers the
    gradient is gated by 1{|w| ≤ c} and latent weights are clipped to [−c, c] after each step."""
    params = [*kernels, *scales, *biases]
    n = len(kernels)
    history = []
    for epoch in range(epochs):
        binary = ilb_binary_layers(order, epoch, epochs_per_layer)
        for x, y in zip(x_batches[epoch], y_batches[epoch]):
            used = [torch_sign(w) if i in binary else w for i, w in enumerate(params[:n])]
            _, gw, gg, gb = mlp_loss_and_grads(x, y, used, params[n:2 * n], params[2 * n:])
            if box is not None:
                gw = [g * (np.abs(w) <= box) if i in binary else g for i, (g, w) in enumerate(zip(gw, params[:n]))]
            grads = [*gw, *gg, *gb]
            if isinstance(optimizer, TorchAdam):
                params = optimizer.step(params, grads)
            else:
                params = optimizer.step(params, grads, lr_of_epoch(epoch))
            if box is not None:
                params = [np.clip(p, -box, box) if i in binary else p for i, p in enumerate(params)]
        history.append((sorted(binary), [p.copy() for p in params]))
    return history


def rpr_freezing_fractions(ff0, increases):
    """FF of each phase (paper 4.2: 0.9, then 0.95, 0.975, 0.9875, then 1.0): 1 − FF halves each time."""
    return [ff0, *(1 - (1 - ff0) / 2 ** k for k in range(1, increases + 1)), 1.0]


def rpr_paper_schedule():
    """(FF, lr factor) per epoch of the paper's GoogLeNet run (sec. 4.2, fig. 2): 37 epochs at FF 0.9
    at the initial lr; each later FF for 15 epochs, restarting at the initial lr and ×0.1 after 10;
    FF = 1 for 30 epochs, 10 each at 1×, 0.1×, 0.01×."""
    ffs = rpr_freezing_fractions(0.9, 3)
    epochs = [(ffs[0], 1.0)] * 37
    for ff in ffs[1:-1]:
        epochs += [(ff, 1.0)] * 10 + [(ff, 0.1)] * 5
    epochs += [(1.0, 1.0)] * 10 + [(1.0, 0.1)] * 10 + [(1.0, 0.01)] * 10
    return epochs


def rpr_step(x, y, latent, constrained, scales, biases, adam, hold_moments):
    """One RPR step (paper eq. 3): the forward sees q(w) = sign(w) on the constrained partition and
    w on the relaxed one; only relaxed weights and the continuous parameters move (Adam).
    Moments of constrained weights: `hold_moments` keeps them unchanged; otherwise Adam takes their
    straight-through gradient g·1{|w| ≤ 1} (Hubara et al.) and only their update is dropped."""
    n = len(latent)
    used = [np.where(c, np.where(w >= 0, 1.0, -1.0), w) for w, c in zip(latent, constrained)]
    _, gw, gg, gb = mlp_loss_and_grads(x, y, used, scales, biases)
    gw = [np.where(c, g * (np.abs(w) <= 1.0), g) for g, w, c in zip(gw, latent, constrained)]
    held = [c.astype(bool) for c in constrained]
    if hold_moments:
        params = adam.step([*latent, *scales, *biases], [*gw, *gg, *gb], hold=[*held, *([None] * 2 * n)])
    else:
        stepped = adam.step([*latent, *scales, *biases], [*gw, *gg, *gb])
        params = [*(np.where(h, w, s) for h, w, s in zip(held, latent, stepped[:n])), *stepped[n:]]
    return params[:n], params[n:2 * n], params[2 * n:]


# Driving bnnx through its public API: a built experiment, set weights, fixed batches.

def build(*overrides, dataset):
    """The experiment `bnnx train OVERRIDES` builds, on the embedded digits, two steps per epoch."""
    from bnnx.config.compose import compose_config
    from bnnx.train.experiment import build_experiment

    config = compose_config([*overrides, "dataset=digits", f"batch_size={dataset.num_train // 2}"])
    return build_experiment(config, dataset=dataset)


def layer_count(state) -> int:
    return sum(1 for name in state.params if name.startswith("QuantDense_"))


def set_weights(state, seed: int, spread: float = 1.5):
    """`state` with kernels uniform in ±spread (so latent weights beyond ±1 exist from the start)
    and random BN scales and biases; returns (state, kernels, scales, biases) as float64 lists."""
    rng = np.random.default_rng(seed)
    params = {name: dict(layer) for name, layer in state.params.items()}
    for i in range(layer_count(state)):
        shape = params[f"QuantDense_{i}"]["kernel"].shape
        params[f"QuantDense_{i}"]["kernel"] = rng.uniform(-spread, spread, shape).astype(np.float32)
        params[f"BatchNorm_{i}"]["scale"] = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
        params[f"BatchNorm_{i}"]["bias"] = rng.uniform(-0.5, 0.5, shape[-1]).astype(np.float32)
    state = state.replace(params=params)
    return (state, *as_lists(state))


def as_lists(state):
    n = layer_count(state)
    get = lambda name, key: [np.asarray(state.params[f"{name}_{i}"][key], np.float64) for i in range(n)]  # noqa: E731
    return get("QuantDense", "kernel"), get("BatchNorm", "scale"), get("BatchNorm", "bias")


def random_batches(dataset, epochs: int, steps: int, size: int, seed: int):
    """Raw-pixel batches (no constant pixel, so no gradient is pure rounding noise) and, for the
    reference, the same batches normalized as the data set's step normalizes them."""
    rng = np.random.default_rng(seed)
    batches, xs, ys = [], [], []
    for _ in range(epochs):
        epoch_batches, epoch_x, epoch_y = [], [], []
        for _ in range(steps):
            images = rng.uniform(0, 16, (size, *dataset.train_images.shape[1:])).astype(np.float32)
            labels = rng.integers(0, dataset.num_classes, size).astype(np.int32)
            epoch_batches.append((images, labels, np.ones(size, np.float32)))
            epoch_x.append(np.asarray(dataset.normalize(images), np.float64).reshape(size, -1))
            epoch_y.append(labels)
        batches.append(epoch_batches)
        xs.append(epoch_x)
        ys.append(epoch_y)
    return batches, xs, ys


def precision_masks(state) -> dict[int, np.ndarray]:
    return {i: np.asarray(state.quant[f"QuantDense_{i}"]["kernel_mask"]) for i in range(layer_count(state))
            if f"QuantDense_{i}" in state.quant}


def trainable_masks(state) -> dict[int, np.ndarray]:
    return {i: np.asarray(state.trainable[f"QuantDense_{i}"]["kernel"]) for i in range(layer_count(state))}
