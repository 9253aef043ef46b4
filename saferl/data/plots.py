"""Dataset plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from saferl.data.offline import OfflineDataset


def scatter_plot(data: OfflineDataset, path: Path, title: str, thresholds: Sequence[float] = ()) -> Path:
    """Episodes in the (cost return, reward return) plane, with the task's cost thresholds as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    ax.scatter(data.episode_costs.cpu().numpy(), data.episode_rewards.cpu().numpy(), s=6, alpha=0.5)
    for t in thresholds:
        ax.axvline(t, color="crimson", lw=0.8, ls="--")
    ax.set_xlabel("episode cost return")
    ax.set_ylabel("episode reward return")
    ax.set_title(f"{title}: {data.num_episodes} episodes, {data.num_transitions} transitions", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
