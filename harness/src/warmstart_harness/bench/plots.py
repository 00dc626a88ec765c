"""PNG plots for benchmark reports (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def bar_chart(
    path: Path,
    title: str,
    ylabel: str,
    values: Mapping[str, float],
    samples: Mapping[str, Sequence[float]] | None = None,
) -> Path:
    """Bars of medians, with every sample drawn as a dot so the spread is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    bars = ax.bar(
        names,
        [values[n] for n in names],
        color=["#2a9d8f", "#e9c46a", "#e76f51", "#8ab17d"][: len(names)],
    )
    for bar, name in zip(bars, names, strict=True):
        ax.annotate(
            f"{values[name]:.0f}" if values[name] >= 10 else f"{values[name]:.2f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
        for s in (samples or {}).get(name, ()):
            ax.plot(bar.get_x() + bar.get_width() / 2, s, "k.", alpha=0.5)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
