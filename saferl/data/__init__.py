"""Datasets: Minari I/O, `OfflineDataset` tensors, and the recipes that build saferl's datasets locally."""

from saferl.data.hdf5_import import DSRL_TASKS, HDF5ImportError, from_hdf5
from saferl.data.minari_io import DatasetCorruptError, DatasetError, DatasetNotFoundError
from saferl.data.offline import Batch, OfflineDataset, load
from saferl.data.recipes import RECIPES, build, recipe_for


def ensure(dataset_id: str, progress: bool = True) -> None:
    """Build ``dataset_id`` with its recipe when it is a saferl dataset that is not there yet."""
    from saferl.data import minari_io

    recipe = recipe_for(dataset_id)
    if recipe is None or (minari_io.dataset_dir(dataset_id) / "data" / "metadata.json").is_file():
        return
    if getattr(recipe, "expensive", False):  # SAC behaviour policies: minutes to tens of minutes
        from saferl.data.sb3_recipe import expected_minutes

        raise DatasetNotFoundError(
            f"dataset {dataset_id} is not built yet (MINARI_DATASETS_PATH={minari_io.datasets_root()}). Build it "
            f"with `python -m saferl.collect env={recipe.task} budget=full` (about "
            f"{expected_minutes(recipe, 'full'):g} min on 2 cores; budget=small takes a few minutes)"
        )
    build(dataset_id, progress=progress)


__all__ = [
    "Batch",
    "DatasetCorruptError",
    "DatasetError",
    "DatasetNotFoundError",
    "DSRL_TASKS",
    "HDF5ImportError",
    "OfflineDataset",
    "RECIPES",
    "build",
    "ensure",
    "from_hdf5",
    "load",
    "recipe_for",
]
