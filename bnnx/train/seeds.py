"""How the one training loop drives its runs: one run as built, or the seeds of a cell as one
vectorised program.

A `Program` turns the runs' host-side train states into the state the loop steps on and back,
and steps, feeds and evaluates it. `OneRun` is the identity around the experiment's own jitted
steps. `SeedGroup` stacks K states that differ only in their seed (leaf i of the stacked state is
run i's leaf), feeds run i's own batch (its data order) in row i, and steps all K with
`jit(vmap(train_step))`: one compile per cell. Each run's initialisation, rng (augmentation),
and host-side method hooks (RPR's partitions, ILB's order) are its own, so every run computes
what it would alone, up to float reduction order.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from bnnx.config.compose import PER_RUN_KEYS
from bnnx.train.devices import placement
from bnnx.train.step import evaluate, evaluation_sums, test_metrics


class NotVectorisable(Exception):
    """These runs cannot share one program; the message says why in one line."""


class OneRun:
    """One run: its experiment's own jitted steps, no stacking."""

    def __init__(self, experiment):
        self.experiments = [experiment]
        self.placement = placement(experiment.config)

    def stack(self, states: list):
        return self._place(states[0])

    def unstack(self, state) -> list:
        return [self._host(state)]

    def train_batches(self, epoch: int, start: int):
        exp = self.experiments[0]
        return self._split(exp.dataset.train_batches(epoch, exp.config.batch_size, exp.config.seed, start))

    def _place(self, tree):
        return self.placement.state(tree) if self.placement else tree

    def _host(self, tree):
        return self.placement.host(tree) if self.placement else tree

    def _split(self, batches):
        return map(self.placement.batch, batches) if self.placement else batches

    def train_step(self, state, batch):
        """One step with the experiment's jitted train step."""
        exp = self.experiments[0]
        return exp.train_step(state, batch, exp.loss)

    def evaluate(self, state) -> list[dict]:
        return [evaluate(self.experiments[0], state)]

    def split(self, sums: dict) -> list[dict]:
        return [{k: float(v) for k, v in sums.items()}]


class SeedGroup(OneRun):
    """K runs that differ only in their seed, stepped as one vmapped program."""

    def __init__(self, experiments: list):
        self.experiments = list(experiments)
        self.placement = placement(experiments[0].config, batch_axis=1)
        self.loss = self.stack([exp.loss for exp in experiments])
        self._vmapped: dict = {}  # single-run step -> its jit(vmap(...)), compiled once per cell
        self._eval = jax.jit(jax.vmap(experiments[0].eval_step, in_axes=(0, None)))

    def stack(self, trees: list):
        """One tree whose leaves are the runs' leaves stacked on a new leading axis; static fields
        (apply_fn, tx) are the first run's, which `check_vectorisable` found equivalent."""
        leaves = stack_leaves([jax.tree.leaves(tree) for tree in trees])
        return self._place(jax.tree.unflatten(jax.tree.structure(trees[0]), leaves))

    def unstack(self, state) -> list:
        """Run i's own state (its own static fields, so its host hooks see its own optimizer); on
        the CPU its leaves are NumPy rows of one host copy, as checkpoints and observers read them."""
        rows = unstack_leaves(jax.tree.leaves(self._host(state)), len(self.experiments))
        return [jax.tree.unflatten(jax.tree.structure(exp.state), row) for exp, row in zip(self.experiments, rows)]

    def train_batches(self, epoch: int, start: int):
        streams = [exp.dataset.train_batches(epoch, exp.config.batch_size, exp.config.seed, start)
                   for exp in self.experiments]
        return self._split(tuple(np.stack(parts) for parts in zip(*batches)) for batches in zip(*streams))

    def train_step(self, state, batch):
        step = self.experiments[0].train_step
        if step not in self._vmapped:
            self._vmapped[step] = jax.jit(jax.vmap(step, in_axes=(0, 0, 0)), donate_argnums=(0,))
        return self._vmapped[step](state, batch, self.loss)

    def evaluate(self, state) -> list[dict]:
        sums = jax.device_get(evaluation_sums(self.experiments[0], state, lambda s, b: self._eval(s, b)))
        return [test_metrics({k: v[i] for k, v in sums.items()}) for i in range(len(self.experiments))]

    def split(self, sums: dict) -> list[dict]:
        return [{k: float(v[i]) for k, v in sums.items()} for i in range(len(self.experiments))]


# off the CPU: one compiled program each per cell (eager stacking and slicing would compile per
# leaf shape); on the CPU the host's copy is as near as the device's, and NumPy moves the bytes
_stack_compiled = jax.jit(lambda runs: [jnp.stack(leaves) for leaves in zip(*runs)])
_unstack_compiled = jax.jit(lambda leaves, count: [[leaf[i] for leaf in leaves] for i in range(count)],
                            static_argnums=1)


def stack_leaves(runs: list[list]) -> list:
    """Leaf j of the result is the runs' leaves j stacked on a new leading axis."""
    if not all(map(_copies_exactly_on_host, runs)):
        return _stack_compiled(runs)
    return jax.device_put([np.stack([np.asarray(leaf) for leaf in leaves]) for leaves in zip(*runs)])


def unstack_leaves(leaves: list, count: int) -> list[list]:
    """Run i's leaves: row i of each stacked leaf."""
    if not _copies_exactly_on_host(leaves):
        return _unstack_compiled(leaves, count)
    host = [np.array(leaf) for leaf in leaves]  # a copy: a view would pin the stacked buffers the step donates
    return [[leaf[i, ...] for leaf in host] for i in range(count)]


def _copies_exactly_on_host(leaves: list) -> bool:
    """Whether NumPy stacks and slices these leaves into the arrays the compiled programs give:
    CPU arrays of NumPy dtypes (not PRNG keys) that are not weakly typed (a host copy is strong)."""
    return all(isinstance(leaf, (np.ndarray, jax.Array)) and isinstance(leaf.dtype, np.dtype)
               and not jax.typeof(leaf).weak_type
               and (isinstance(leaf, np.ndarray) or all(d.platform == "cpu" for d in leaf.devices()))
               for leaf in leaves)


def program_for(experiments: list):
    return OneRun(experiments[0]) if len(experiments) == 1 else SeedGroup(experiments)


def check_vectorisable(experiments: list, states: list) -> None:
    """Raise NotVectorisable unless the runs differ only in seed and their steps are one program:
    same config but for the seed, same leaf shapes, and train/eval steps that trace to the same
    jaxpr with the same constants (a seed baked into the step as a constant would differ)."""
    from bnnx.config import config_to_dict

    configs = [{k: v for k, v in config_to_dict(e.config).items() if k not in PER_RUN_KEYS} for e in experiments]
    if any(c != configs[0] for c in configs[1:]):
        raise NotVectorisable("the runs differ in more than their seed")
    if any(e.dataset is not experiments[0].dataset for e in experiments[1:]):
        raise NotVectorisable("the runs do not share one data set")
    shapes = [_shapes(state, e.loss) for e, state in zip(experiments, states)]
    if any(s != shapes[0] for s in shapes[1:]):
        raise NotVectorisable("the seeds' train states have different shapes")
    # the train step holds the forward pass, the runtime hook and the optimizer; the eval step is
    # the same model and runtime hook without the optimizer, so it is not traced again
    batch = next(iter(experiments[0].dataset.train_batches(0, experiments[0].config.batch_size, 0)))
    programs = [[_program(e.train_step, state, batch, e.loss)] for e, state in zip(experiments, states)]
    if any(not _same_program(p, programs[0]) for p in programs[1:]):
        raise NotVectorisable("its train step differs between seeds (a seed-dependent constant in the step)")


def _shapes(*trees) -> list:
    return [(jax.tree.structure(t).num_leaves, [(np.shape(x), np.asarray(x).dtype) for x in jax.tree.leaves(t)])
            for t in trees]


def _program(step: Callable, *args) -> tuple:
    closed = jax.make_jaxpr(step)(*args)
    return str(closed.jaxpr), _constants(closed)


def _constants(closed) -> list:
    """Every constant of a closed jaxpr and of the closed jaxprs nested in its equations."""
    found = list(closed.consts)
    for eqn in closed.jaxpr.eqns:
        for param in eqn.params.values():
            for inner in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(inner, jax.extend.core.ClosedJaxpr):
                    found += _constants(inner)
    return found


def _same_program(a: list, b: list) -> bool:
    """Two lists of (jaxpr text, constants) describe the same computation."""
    return all(text_a == text_b and len(consts_a) == len(consts_b) and all(
        np.shape(c) == np.shape(d) and np.array_equal(np.asarray(c), np.asarray(d)) for c, d in zip(consts_a, consts_b))
        for (text_a, consts_a), (text_b, consts_b) in zip(a, b))
