"""matplotlib for the report's plots, when it is there: plots are optional (``uv sync --group
bench``), so both the report and the network report ask here instead of importing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> tuple[Any, str | None]:
    """pyplot on the Agg backend (no display needed), or None and why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, "matplotlib is not installed (`uv sync --group bench`)"
    return plt, None


def save(fig: Any, path: Path, plt: Any) -> bool:
    """Lay out, write the PNG, and free the figure (a long report draws several)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
