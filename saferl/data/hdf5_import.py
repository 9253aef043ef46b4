"""Import DSRL / D4RL HDF5 files (flat ``observations, actions, rewards, costs, terminals, timeouts`` and often
``next_observations`` arrays) as Minari datasets with the cost in ``infos["cost"]``.

Decisions (README, "Bring your DSRL / D4RL files"):

* An episode ends at every step flagged ``terminals`` or ``timeouts``. Steps after the last flagged one (a
  file cut off mid-episode) form a last episode that is kept and marked truncated: its transitions are real,
  only the time limit was not reached.
* With ``next_observations``, each step's next observation must equal the following step's observation
  inside an episode; the first mismatch is an error. ``check_next_observations=False`` skips the check, and
  the following step's observation is then the next observation inside an episode (Minari stores one
  observation sequence per episode, so the file's own ``next_observations`` are kept only at episode ends).
  Without ``next_observations``, the next observation is the following row's, so each episode's last step
  (whose next observation the file lacks) is dropped and the step before it marked truncated, as D4RL's
  ``qlearning_dataset`` does.
* Costs are required; files without ``costs`` (D4RL) import only with ``zero_costs=True``.
* The dataset is written by the same atomic writer as saferl's recipes and records the saferl task's env
  spec, so training on it checks it against the task like any saferl dataset.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id

from saferl.data import minari_io, reader
from saferl.data.minari_io import DatasetError
from saferl.envs import TaskSpec, UnknownTaskError, get_task

log = logging.getLogger("saferl")

# DSRL's (and safety-gymnasium's) velocity task ids → saferl's tasks. DSRL records gymnasium v4 MuJoCo models;
# saferl runs v5 with the same observation layout for these five (Ant without contact forces: 27 numbers).
DSRL_TASKS: dict[str, str] = {
    "OfflineHalfCheetahVelocityGymnasium-v1": "halfcheetah-velocity",
    "OfflineHopperVelocityGymnasium-v1": "hopper-velocity",
    "OfflineAntVelocityGymnasium-v1": "ant-velocity",
    "OfflineWalker2dVelocityGymnasium-v1": "walker2d-velocity",
    "OfflineSwimmerVelocityGymnasium-v1": "swimmer-velocity",
    "SafetyHalfCheetahVelocity-v1": "halfcheetah-velocity",
    "SafetyHopperVelocity-v1": "hopper-velocity",
    "SafetyAntVelocity-v1": "ant-velocity",
    "SafetyWalker2dVelocity-v1": "walker2d-velocity",
    "SafetySwimmerVelocity-v1": "swimmer-velocity",
}

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
_SCALAR_KEYS = ("rewards", "costs", "terminals", "timeouts")


class HDF5ImportError(DatasetError, ValueError):
    """An HDF5 file that cannot be imported as it is (missing keys, wrong shapes, inconsistent steps)."""


def resolve_task(env: str) -> TaskSpec:
    """A saferl task by Hydra name, gymnasium id, or DSRL / safety-gymnasium velocity task id."""
    try:
        return get_task(DSRL_TASKS.get(env, env))
    except UnknownTaskError as err:
        raise UnknownTaskError(f"{err}; DSRL task ids: {', '.join(DSRL_TASKS)}") from None


def default_dataset_id(task: TaskSpec) -> str:
    """``saferl/<Task>/imported-v0`` next to the task's own datasets."""
    return f"{task.dataset_id.rsplit('/', 1)[0]}/imported-v0"


def from_hdf5(
    path: str | os.PathLike,
    env: str,
    dataset_id: str | None = None,
    *,
    zero_costs: bool = False,
    check_next_observations: bool = True,
    overwrite: bool = False,
) -> Path:
    """Convert a DSRL / D4RL HDF5 file into a Minari dataset for ``env``; returns the dataset directory.

    ``env`` is a saferl task (``halfcheetah-velocity``, ``saferl/HalfCheetahVelocity-v1``) or a DSRL id
    (``OfflineHalfCheetahVelocityGymnasium-v1``); ``dataset_id`` defaults to ``saferl/<Task>/imported-v0``.
    Load the result with ``saferl.data.load(dataset_id)`` or train on it with ``dataset=<dataset_id>``.
    """
    task = resolve_task(env)
    dataset_id = dataset_id or default_dataset_id(task)
    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):  # TypeError: Minari's parser on an id without -v<N>
        raise HDF5ImportError(
            f"invalid dataset id {dataset_id!r}: use the form namespace/name-v<N>, e.g. {default_dataset_id(task)}"
        ) from None
    source = Path(path).expanduser().resolve()
    _check_source(source)  # cheap checks before the existing-dataset check and the (large) read
    minari_io.require_absent(dataset_id, overwrite)
    arrays = _read_file(source, zero_costs)
    _check_shapes(arrays, task, source)
    buffers, stats = _episodes(arrays, source, check_next_observations)
    meta = {
        "recipe": "hdf5-import",
        "source": str(source),
        "source_sha256": minari_io.file_sha256(source),
        "task": task.name,
        "episodes": len(buffers),
        "zero_costs": zero_costs,
        "next_observations_checked": check_next_observations and "next_observations" in arrays,
        **stats,
    }
    description = (
        f"{source.name} (DSRL/D4RL HDF5) imported for {task.env_id}: {len(buffers)} episodes, "
        f"{stats['transitions']} transitions" + ("; costs set to 0 (the file has none)" if zero_costs else "")
    )
    try:
        out = minari_io.write_dataset(dataset_id, buffers, task.env_id, meta, description, overwrite=overwrite)
    except PermissionError as err:
        raise DatasetError(
            f"cannot write dataset {dataset_id} under {minari_io.datasets_root()}: {err}. Set "
            "MINARI_DATASETS_PATH to a writable directory"
        ) from None
    reader.write_cache_from_buffers(out, buffers)
    return out


def _check_source(source: Path) -> None:
    import h5py

    if not source.is_file():
        raise HDF5ImportError(f"no such file: {source}; pass the path of a DSRL / D4RL .hdf5 file")
    if not h5py.is_hdf5(source):
        raise HDF5ImportError(
            f"{source} is not an HDF5 file; DSRL and D4RL datasets are .hdf5 files with top-level arrays "
            f"{', '.join(REQUIRED_KEYS)}, costs and usually next_observations"
        )


def _read_file(source: Path, zero_costs: bool) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(source, "r") as fh:
            present = sorted(k for k in fh.keys() if isinstance(fh[k], h5py.Dataset))
            wanted = [*REQUIRED_KEYS, "costs"]
            missing = [k for k in wanted if k not in present and not (k == "costs" and zero_costs)]
            if missing:
                hint = (
                    "; D4RL files have no costs: pass zero_costs=true to import them with cost 0 on every step"
                    if missing == ["costs"]
                    else ""
                )
                raise HDF5ImportError(
                    f"{source} lacks the top-level array(s) {', '.join(missing)} (it has: "
                    f"{', '.join(present) or 'none'}){hint}"
                )
            keys = [k for k in (*wanted, "next_observations") if k in present]
            arrays = {k: fh[k][()] for k in keys}
    except HDF5ImportError:
        raise
    except Exception as err:  # truncated or corrupt file: name it instead of failing deep inside h5py
        raise HDF5ImportError(f"cannot read HDF5 file {source}: {err}") from err
    if zero_costs:
        if "costs" in arrays:
            log.warning("zero_costs=true: ignoring the costs recorded in %s", source)
        arrays["costs"] = np.zeros(len(arrays["rewards"]), dtype=np.float64)
    return arrays


def _check_shapes(arrays: dict[str, np.ndarray], task: TaskSpec, source: Path) -> None:
    env = gym.make(task.env_id, disable_env_checker=True)
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    env.close()
    n = len(arrays["observations"])
    if n == 0:
        raise HDF5ImportError(f"{source} holds no transitions")
    for key in arrays:
        if len(arrays[key]) != n:
            raise HDF5ImportError(
                f"{source}: {key} has {len(arrays[key])} rows but observations has {n}; every array must hold "
                "one row per transition"
            )
    for key, want, space in (
        ("observations", obs_shape, "observation"),
        ("next_observations", obs_shape, "observation"),
        ("actions", act_shape, "action"),
    ):
        if key in arrays and arrays[key].shape[1:] != want:
            raise HDF5ImportError(
                f"{source}: {key} rows have shape {arrays[key].shape[1:]} but task {task.name} ({task.env_id}) "
                f"has {space} shape {want}; pick the task the file was recorded on (env=...)"
            )
    for key in _SCALAR_KEYS:
        arr = arrays[key]
        if arr.ndim == 2 and arr.shape[1] == 1:  # some writers store [N, 1] columns
            arrays[key] = arr = arr[:, 0]
        if arr.ndim != 1:
            raise HDF5ImportError(f"{source}: {key} has shape {arr.shape}; expected one number per transition ({n},)")
    for key in ("observations", "next_observations", "actions", "rewards", "costs"):
        if key in arrays and not np.isfinite(arrays[key]).all():
            row = int(np.flatnonzero(~np.isfinite(arrays[key].reshape(n, -1)).all(axis=1))[0])
            raise HDF5ImportError(f"{source}: {key} is not finite at index {row}")
    if (arrays["costs"] < 0).any():
        row = int(np.flatnonzero(arrays["costs"] < 0)[0])
        raise HDF5ImportError(f"{source}: costs must be >= 0 (saferl's cost convention); costs[{row}] < 0")


def _episodes(
    arrays: dict[str, np.ndarray], source: Path, check_next_observations: bool
) -> tuple[list[EpisodeBuffer], dict[str, Any]]:
    obs = arrays["observations"]
    n = len(obs)
    terminals = arrays["terminals"].astype(bool)
    timeouts = arrays["timeouts"].astype(bool)
    done = terminals | timeouts
    next_obs = arrays.get("next_observations")
    if next_obs is not None and check_next_observations and n > 1:
        # inside an episode, step t's next observation is step t+1's observation
        inside = ~done[:-1]
        bad = inside & ~np.isclose(next_obs[:-1], obs[1:], rtol=1e-5, atol=1e-6).reshape(n - 1, -1).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise HDF5ImportError(
                f"{source}: next_observations[{i}] differs from observations[{i + 1}] although step {i} ends no "
                "episode (neither terminals nor timeouts is set). The file's episode boundaries are probably "
                "incomplete; if you know the data is like this, pass check_next_observations=false (the following "
                "step's observation then serves as the next observation inside an episode)"
            )
    ends = np.flatnonzero(done) + 1
    tail_truncated = bool(ends.size == 0 or ends[-1] != n)
    if tail_truncated:
        log.warning(
            "%s: the last %d steps end without terminal or timeout; kept as a truncated episode",
            source,
            n - (ends[-1] if ends.size else 0),
        )
        ends = np.append(ends, n)
    starts = np.concatenate([[0], ends[:-1]])
    buffers: list[EpisodeBuffer] = []
    dropped = 0
    for begin, end in zip(starts, ends, strict=True):
        term, trunc = terminals[begin:end].copy(), timeouts[begin:end].copy()
        if end == n and tail_truncated:
            trunc[-1] = True
        if next_obs is not None:
            ep_obs = np.concatenate([obs[begin:end], next_obs[end - 1 : end]])
        else:
            # the last step's next observation is not in the file: drop the step, the one before is cut off
            end -= 1
            dropped += 1
            if end == begin:
                continue
            term, trunc = term[:-1], trunc[:-1]
            term[-1], trunc[-1] = False, True
            ep_obs = obs[begin : end + 1]
        costs = np.concatenate([[0.0], arrays["costs"][begin:end]])  # entry 0: the reset's cost
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                observations=ep_obs.astype(np.float32),
                actions=arrays["actions"][begin:end].astype(np.float32),
                rewards=arrays["rewards"][begin:end].astype(np.float64).tolist(),
                terminations=term.tolist(),
                truncations=trunc.tolist(),
                infos={"cost": costs.astype(np.float64)},
            )
        )
    if not buffers:
        raise HDF5ImportError(
            f"{source}: no episode is left (without next_observations every episode loses its last step)"
        )
    stats = {
        "transitions": int(sum(len(b.rewards) for b in buffers)),
        "tail_truncated": tail_truncated,
        "dropped_last_steps": dropped,
    }
    return buffers, stats
