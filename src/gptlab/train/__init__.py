"""Training: `TrainConfig`, presets, the `Trainer` loop, evaluation, plots, DDP.

Public names:
- `TrainConfig`, `PRESETS`, `resolve_config(preset, config_path, overrides)`.
- `Trainer(run_dir, model_settings, config, resume=False)`, `train(...) -> TrainResult`.
- `get_lr`, `configure_optimizer` (gptlab.train.optim); `estimate_loss`, `evaluate_tokens`,
  `loss_metrics`, `MetricsLog` (gptlab.train.evaluate); `load_training_data`
  (gptlab.train.data); `plot_run` (gptlab.train.plot).
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
