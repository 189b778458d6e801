"""Training: `TrainConfig` and the presets (config), the `Trainer` loop (trainer), the
optimizers and schedule (optim), `estimate_loss` and the metrics log (evaluate), the dataset
(data), `plot_run` (plot) and DDP (distributed).

The loop itself is `Trainer.run`; device, dtype and RNG state come from `gptlab.runtime`.
The run-folder format is described in `gptlab.checkpoint`.
"""

from gptlab.train.config import PRESETS, Preset, TrainConfig, resolve_config
from gptlab.train.optim import configure_optimizer, get_lr
from gptlab.train.trainer import Trainer, TrainingDiverged, TrainResult, train

__all__ = [
    "PRESETS",
    "Preset",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "configure_optimizer",
    "get_lr",
    "resolve_config",
    "train",
]
