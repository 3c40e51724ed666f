"""The trainer layer: AEVB training of the paper's models or the user's own, on built-in data or
the user's own, in one process or many (``torchrun``). Imports the core (``aevb_fast.ops``,
``elbo``, ``models``), never the other way round; needs the ``[train]`` extra (tqdm, matplotlib,
scipy).

```python
from aevb_fast.training import TrainConfig, train
summary = train(TrainConfig(batch_size=4096, samples=2_000_000, out="runs/mine"),
                model=my_vae, train_data=x_train, test_data=x_test)
```
"""

import importlib

# Loaded on first use, so that `aevb-fast --help` and the config need no tqdm or matplotlib.
_EXPORTS = {
    "TrainConfig": "config",
    "LARGE_BATCH": "config",
    "train": "trainer",
    "Trainer": "trainer",
    "TrainingStopped": "trainer",
    "TrainingDiverged": "divergence",
    "TrainingDidNotLearn": "divergence",
    "TooShortToJudge": "divergence",
    "GreyLevelsUnderBernoulli": "data",
    "RunError": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_metrics": "checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    """The public names, loaded or not: what tab completion offers."""
    return sorted(__all__)
