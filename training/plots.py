"""Training curves as a PNG (loss and validation metrics per epoch)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["plot_curves"]


def plot_curves(history: list[dict], path: Path) -> None:
    """Plot train loss and every ``val_*`` metric of ``history`` against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    val_keys = [k for k in history[0] if k.startswith("val_") and k != "val_loss"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        if key in history[0]:
            axes[0].plot(epochs, [row[key] for row in history], marker="o", label=key)
    axes[0].set(title="loss (masked cross-entropy)", xlabel="epoch")
    axes[0].legend(fontsize=8)
    for key in val_keys:
        values = [row[key] * (100 if key == "val_CIDEr" else 1) for row in history]
        axes[1].plot(
            epochs,
            values,
            marker="o",
            label=key.removeprefix("val_") + (" x100" if key == "val_CIDEr" else ""),
        )
    axes[1].set(title="validation (greedy)", xlabel="epoch")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
