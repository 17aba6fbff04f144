"""Data parallelism over the local devices: a 1-D mesh, params replicated, each batch split.

With `jit` and a batch sharded over the mesh, XLA partitions the step itself: a batch mean
(BatchNorm's statistics, the loss) over the sharded axis is computed over the whole batch, i.e.
the average of the devices' means, so an epoch's metrics equal the one-device run's up to float
reduction order. `devices` is the config key (an int, or "all" for every local device).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnnx.errors import check

AXIS = "data"


def device_count(devices) -> int:
    available = jax.local_device_count()
    count = available if devices == "all" else int(devices)
    check(count <= available, f"devices={devices} but this machine has {available} local device(s) "
                              f"({jax.local_devices()[0].platform})")
    return count


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the loop's arrays live: the state replicated over the mesh, batches split along
    `batch_axis` (0 for one run, 1 under a seed axis)."""

    mesh: Mesh
    batch_axis: int

    def state(self, tree):
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def batch(self, batch):
        spec = PartitionSpec(*([None] * self.batch_axis), AXIS)
        return jax.device_put(batch, NamedSharding(self.mesh, spec))

    def host(self, tree):
        """On one device, for host-side hooks that create arrays of their own."""
        return jax.device_put(tree, jax.local_devices()[0])


def placement(config, batch_axis: int = 0) -> Placement | None:
    """The run's placement, or None on one device (nothing moves)."""
    count = device_count(config.devices)
    if count == 1:
        return None
    check(config.batch_size % count == 0,
          f"batch_size={config.batch_size} must be a multiple of devices ({count}) to split each batch")
    return Placement(Mesh(np.array(jax.local_devices()[:count]), (AXIS,)), batch_axis)
