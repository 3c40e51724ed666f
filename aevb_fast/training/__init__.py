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

from .checkpoint import RunError, load_checkpoint, read_metrics
from .config import LARGE_BATCH, TrainConfig
from .trainer import Trainer, TrainingDiverged, TrainingStopped, train

__all__ = ["TrainConfig", "train", "Trainer", "TrainingDiverged", "TrainingStopped", "RunError",
           "load_checkpoint", "read_metrics", "LARGE_BATCH"]
