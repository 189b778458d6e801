"""`gptlab plot`: train and validation loss against steps and tokens, as a PNG."""

from __future__ import annotations

from pathlib import Path

from gptlab.checkpoint import METRICS_FILE
from gptlab.errors import GptlabError
from gptlab.files import atomic_write
from gptlab.train.evaluate import read_metrics


def plot_run(run_dir: Path, out_path: Path | None = None) -> Path:
    """Write a PNG with two panels (loss vs steps, loss vs tokens) of a run's metrics.jsonl
    to `out_path` (default RUN_DIR/loss.png), and return its path."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        raise GptlabError(f"{metrics_path} not found: is {run_dir} a gptlab run folder?")
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        raise GptlabError(f"{metrics_path} has no records yet: train for a few steps first")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GptlabError(
            "plotting needs matplotlib: pip install 'gptlab[plot]' (or pip install matplotlib)"
        ) from None

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x_key, label in ((axes[0], "step", "step"), (axes[1], "tokens", "tokens seen")):
        if train:
            ax.plot([r[x_key] for r in train], [r["loss"] for r in train],
                    lw=0.6, alpha=0.5, label="train (batch)")
        for key, style in (("train_loss", "o-"), ("val_loss", "s-")):
            pts = [(r[x_key], r[key]) for r in evals if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, ms=3,
                        label=key.replace("_loss", " (eval)"))
        ax.set_xlabel(label)
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out_path = Path(out_path) if out_path else run_dir / "loss.png"
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out_path
