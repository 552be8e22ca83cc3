"""Loss and learning-rate curves of a run (metrics.jsonl -> PNG)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..jsonl import read_jsonl


def plot_metrics(metrics: str | Path, out: str | Path) -> Path | None:
    """Two panels: training loss per step (+ validation loss) and the learning rate. None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no loss plot (pip install matplotlib)", file=sys.stderr)
        return None
    rows = read_jsonl(metrics, strict=True)
    train = [r for r in rows if r.get("type") == "train"]
    valid = [r for r in rows if r.get("type") == "valid"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
    if valid:
        top.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="valid loss")
    top.set_ylabel("loss")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:green")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("optimizer step")
    bottom.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
