"""Matplotlib for the reports: headless (the Agg backend, no display needed) and one way to write a
figure (tight layout, 120 dpi, closed afterwards so that long sweeps do not pile up open figures)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported on first use: the reports' only heavy import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    pyplot().close(fig)
    return out
