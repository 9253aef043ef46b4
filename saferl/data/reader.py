"""Read whole Minari datasets into flat transition arrays, fast.

Minari's episode iterator costs ~3 ms per episode (one h5py object per field), which is 15 s for a
1M-transition dataset of 200-step episodes. Two things make loading fast:

* HDF5 datasets are read through h5py's low-level API (open + read into a preallocated array), about
  2× faster than the high-level objects; other storage formats go through Minari's own iterator.
  HDF5 still costs ~0.2 ms per opened field whatever its size (and holds a global lock; splitting the
  read over processes lost more to pickling than it gained), so many short episodes stay the slow case.
* The flat arrays are cached next to the dataset in one uncompressed ``.npz`` keyed by the data file's
  SHA-256 (or, for datasets without a recorded checksum, by file size and mtime), so every later load
  is a single sequential read. saferl's recipes write the cache from memory when they build a dataset,
  so their first load is already warm. A stale or unreadable cache is ignored and rewritten.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from saferl.data import minari_io

CACHE_DIR = ".saferl-cache"
_F32 = np.float32


def read_transitions(
    path: Path, metadata: dict[str, Any], use_cache: bool = True
) -> tuple[dict[str, np.ndarray], bool]:
    """Flat float32 arrays (observations, actions, rewards, costs, next_observations, terminals,
    timeouts) plus int64 ``episode_starts``, and whether the dataset records costs."""
    key = _cache_key(path, metadata)
    cache = path / CACHE_DIR / f"transitions-{key}.npz"
    if use_cache and cache.is_file():
        try:
            with np.load(cache) as npz:
                arrays = {k: npz[k] for k in npz.files}
            has_costs = bool(arrays.pop("has_costs"))
            return arrays, has_costs
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable cache: rebuild it from the Minari files below
    episodes = _episodes_hdf5(path) if metadata.get("data_format", "hdf5") == "hdf5" else _episodes_minari(path)
    arrays, has_costs = _flatten(path, episodes)
    if use_cache:
        _write_cache(cache, dict(arrays, has_costs=np.asarray(has_costs)))
    return arrays, has_costs


def flatten_buffers(buffers: list[Any], path: Path | None = None) -> tuple[dict[str, np.ndarray], bool]:
    """The flat arrays of Minari ``EpisodeBuffer``s: what loading a dataset written from them returns."""
    episodes = [
        {
            "observations": np.asarray(b.observations),
            "actions": np.asarray(b.actions),
            "rewards": np.asarray(b.rewards),
            "terminations": np.asarray(b.terminations),
            "truncations": np.asarray(b.truncations),
            **({"costs": np.asarray(b.infos["cost"])} if b.infos and "cost" in b.infos else {}),
        }
        for b in buffers
    ]
    return _flatten(path or Path("<in-memory episodes>"), episodes)


def write_cache_from_buffers(path: Path, buffers: list[Any]) -> None:
    """Write the load cache of a dataset just built from Minari ``EpisodeBuffer``s (no re-read)."""
    arrays, has_costs = flatten_buffers(buffers, path)
    key = _cache_key(path, minari_io.read_metadata(path))
    _write_cache(path / CACHE_DIR / f"transitions-{key}.npz", dict(arrays, has_costs=np.asarray(has_costs)))


def _cache_key(path: Path, metadata: dict[str, Any]) -> str:
    checksums = metadata.get(minari_io.CHECKSUM_KEY, {}).get("checksums")
    if checksums:
        return "-".join(v[:16] for _, v in sorted(checksums.items()))
    stats = [os.stat(p) for p in sorted((path / "data").iterdir()) if p.is_file()]
    return "stat-" + "-".join(f"{s.st_size}x{s.st_mtime_ns}" for s in stats)


def _write_cache(cache: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob("transitions-*.npz"):
            old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only dataset directory just means no cache


def _episodes_hdf5(path: Path) -> list[dict[str, np.ndarray]]:
    import h5py

    file = path / "data" / "main_data.hdf5"
    try:
        with h5py.File(file, "r") as fh:
            names = sorted(fh.keys(), key=lambda n: int(n.rsplit("_", 1)[1]))
            if not names:
                raise minari_io.DatasetError(f"dataset at {path} has no episodes")
            first = fh[names[0]]
            if not all(isinstance(first[k], h5py.Dataset) for k in ("observations", "actions")):
                raise minari_io.DatasetError(_STRUCTURED.format(path=path))
            has_costs = "infos" in first and "cost" in first["infos"]
        return _read_hdf5_episodes(str(file), names, has_costs)
    except minari_io.DatasetError:
        raise
    except Exception as err:  # truncated/corrupt HDF5: name the file instead of crashing deep in h5py
        raise minari_io.DatasetCorruptError(f"cannot read Minari dataset file {file}: {err}") from err


def _read_hdf5_episodes(file: str, names: list[str], has_costs: bool) -> list[dict[str, np.ndarray]]:
    import h5py
    from h5py import h5d, h5g, h5s

    def read(group_id, name: bytes) -> np.ndarray:
        dset = h5d.open(group_id, name)
        out = np.empty(dset.shape, dtype=dset.dtype)
        dset.read(h5s.ALL, h5s.ALL, out)
        return out

    fields = ("observations", "actions", "rewards", "terminations", "truncations")
    episodes = []
    with h5py.File(file, "r") as fh:
        for name in names:
            gid = h5g.open(fh.id, name.encode())
            ep = {k: read(gid, k.encode()) for k in fields}
            if has_costs:
                ep["costs"] = read(h5g.open(gid, b"infos"), b"cost")
            episodes.append(ep)
    return episodes


_STRUCTURED = (
    "dataset at {path} has structured (dict/tuple) observations or actions; saferl trains on Box spaces "
    "only. Flatten them when you create the dataset."
)


def _episodes_minari(path: Path) -> list[dict[str, np.ndarray]]:
    import minari

    try:
        source = minari.MinariDataset(path / "data")
        raw = list(source.iterate_episodes())
    except Exception as err:
        raise minari_io.DatasetCorruptError(f"cannot read Minari dataset at {path}: {err}") from err
    episodes = []
    for ep in raw:
        if not isinstance(ep.observations, np.ndarray) or not isinstance(ep.actions, np.ndarray):
            raise minari_io.DatasetError(_STRUCTURED.format(path=path))
        item = {
            "observations": ep.observations,
            "actions": ep.actions,
            "rewards": np.asarray(ep.rewards),
            "terminations": np.asarray(ep.terminations),
            "truncations": np.asarray(ep.truncations),
        }
        if isinstance(ep.infos, dict) and "cost" in ep.infos:
            item["costs"] = np.asarray(ep.infos["cost"])
        episodes.append(item)
    return episodes


def _flatten(path: Path, episodes: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
    """Episodes in Minari's layout (T+1 ``observations``, ``terminations``, ``truncations`` and, when
    recorded, T+1 ``costs`` from ``infos["cost"]``) → flat transition arrays named as `saferl.data.Batch`."""
    if not episodes:
        raise minari_io.DatasetError(f"dataset at {path} has no episodes")
    has_costs = all("costs" in ep for ep in episodes)
    lengths = np.array([len(ep["rewards"]) for ep in episodes], dtype=np.int64)
    obs = [ep["observations"].reshape(len(ep["observations"]), -1) for ep in episodes]
    arrays = {
        "observations": np.concatenate([o[:-1] for o in obs]).astype(_F32, copy=False),
        "actions": np.concatenate(
            [ep["actions"].reshape(n, -1) for ep, n in zip(episodes, lengths, strict=True)]
        ).astype(_F32),
        "rewards": np.concatenate([ep["rewards"] for ep in episodes]).astype(_F32),
        "costs": (
            np.concatenate([ep["costs"][1:] for ep in episodes]).astype(_F32)
            if has_costs
            else np.zeros(int(lengths.sum()), dtype=_F32)
        ),
        "next_observations": np.concatenate([o[1:] for o in obs]).astype(_F32, copy=False),
        "terminals": np.concatenate([ep["terminations"] for ep in episodes]).astype(_F32),
        "timeouts": np.concatenate([ep["truncations"] for ep in episodes]).astype(_F32),
        "episode_starts": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    }
    return arrays, has_costs
