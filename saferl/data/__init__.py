"""Datasets: Minari I/O, `OfflineDataset` tensors, and the recipes that build saferl's datasets locally."""

from saferl.data.minari_io import DatasetCorruptError, DatasetError, DatasetNotFoundError
from saferl.data.offline import Batch, OfflineDataset, load
from saferl.data.recipes import RECIPES, build, recipe_for


def ensure(dataset_id: str, progress: bool = True) -> None:
    """Build ``dataset_id`` with its recipe when it is a saferl dataset that is not there yet."""
    from saferl.data import minari_io

    if recipe_for(dataset_id) is None:
        return
    if not (minari_io.dataset_dir(dataset_id) / "data" / "metadata.json").is_file():
        build(dataset_id, progress=progress)


__all__ = [
    "Batch",
    "DatasetCorruptError",
    "DatasetError",
    "DatasetNotFoundError",
    "OfflineDataset",
    "RECIPES",
    "build",
    "ensure",
    "load",
    "recipe_for",
]
