"""What a training run shows and hears: its progress bar, and Ctrl-C / SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from tqdm import tqdm

log = logging.getLogger("gptlab.train.trainer")  # its messages are the trainer's


class ProgressBar:
    """tqdm's bar over the steps, showing the loss and a smoothed tokens per second."""

    def __init__(self, total: int, initial: int, tokens_per_step: int, enabled: bool):
        self.bar = tqdm(total=total, initial=initial, unit="step", disable=not enabled,
                        dynamic_ncols=True)
        self.tokens_per_step = tokens_per_step
        self.tok_s = 0.0

    def update(self, loss: float, dt: float) -> None:
        """One step done, `dt` seconds long."""
        rate = self.tokens_per_step / max(dt, 1e-9)
        self.tok_s = rate if self.tok_s == 0 else 0.9 * self.tok_s + 0.1 * rate
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{self.tok_s:,.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()


class StopOnSignal:
    """While active, SIGINT/SIGTERM ask the trainer to save and stop after the current step;
    a second SIGINT interrupts at once (KeyboardInterrupt)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.trainer.stop_requested = True
        log.info("%s received: saving a checkpoint after this step",
                 signal.Signals(signum).name)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
