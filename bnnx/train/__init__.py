"""Training: the one loop (`loop.py`) and what it builds and drives. `bnnx.train(config)` calls
`bnnx.train.loop.train`, imported on first call."""

from bnnx.callable_module import make_callable

make_callable(__name__, "bnnx.train.loop:train")
