"""The values a run decides once, at its start, and hands on: `ResolvedRun`.

cost limit (``cost_limit=``, else the task's default; 0 is a limit), the evaluation thresholds (the task's
and the run's limit), the dataset (``dataset=``, else the task's) and the id it records, the reward range
(the task's constants, else the dataset's own), the device, and the algorithm's `AlgoContext`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import torch

from saferl import evaluation
from saferl.algos import AlgoContext
from saferl.data import DatasetError, OfflineDataset, ensure, load
from saferl.envs import TASKS, TaskSpec
from saferl.runs.errors import SaferlError
from saferl.runs.settings import SAFE_TOP, SAFE_TOP_EPISODES, RunSettings

log = logging.getLogger("saferl")


@dataclass(frozen=True)
class ResolvedRun:
    task: TaskSpec  # with the reward range the scores are normalised by
    steps: int  # offline updates (the init_from run's when the offline phase happened there)
    cost_limit: float
    thresholds: tuple[float, ...]  # evaluation thresholds: the task's and cost_limit
    dataset: str  # what the run asked for (dataset=, else the task's dataset id)
    dataset_id: str  # the id the dataset records (eval.json)
    device: torch.device
    ctx: AlgoContext
    expert: ExpertSource | None = None  # the expert episodes of an imitation run (expert_dataset=)


@dataclass(frozen=True)
class ExpertSource:
    """What an imitation run imitates: recorded in config.yaml and eval.json."""

    dataset: str  # what the run asked for (expert_dataset=: an id, a directory or "safe-top")
    dataset_id: str  # the id the expert dataset records (safe-top: the training dataset's)
    episodes: int  # expert episodes used
    transitions: int

    def record(self) -> dict[str, str | int]:
        """The ``eval.json`` entries."""
        return {
            "expert_dataset": self.dataset_id,
            "expert_episodes": self.episodes,
            "expert_transitions": self.transitions,
        }


def resolve_cost_limit(cost_limit: float | None, task: TaskSpec) -> float:
    """``cost_limit=`` when given (0 is a limit, not "unset"), else the task's default; the suite uses it too."""
    return float(cost_limit if cost_limit is not None else task.default_cost_limit)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SaferlError(
            f"device={name!r} is not a torch device; use device=cpu, device=cuda or device=cuda:<n>"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SaferlError(f"device={name} but torch sees no CUDA device (torch {torch.__version__}); use device=cpu")
    return device


def resolve_run(s: RunSettings, task: TaskSpec, steps: int) -> tuple[ResolvedRun, OfflineDataset]:
    """Resolve the run's values and load its dataset (checked against the task's env)."""
    device = resolve_device(s.device)
    if s.threads:
        torch.set_num_threads(int(s.threads))
    dataset = s.dataset or task.dataset_id  # an empty dataset= means the default too
    ensure(dataset, progress=s.progress)
    data = load(dataset, device=device, download=s.download)
    env = gym.make(task.env_id)
    check_compatible(data, env, dataset, task, s.allow_env_mismatch)
    task = with_dataset_reward_range(task, data)
    cost_limit = resolve_cost_limit(s.cost_limit, task)
    ctx = AlgoContext.for_task(task, env, cost_limit, device)
    env.close()
    run = ResolvedRun(
        task=task,
        steps=steps,
        cost_limit=cost_limit,
        thresholds=tuple(evaluation.eval_thresholds(task, cost_limit)),
        dataset=dataset,
        dataset_id=data.metadata.get("dataset_id", dataset),
        device=device,
        ctx=ctx,
    )
    return run, data


def resolve_expert(s: RunSettings, run: ResolvedRun, data: OfflineDataset) -> tuple[ResolvedRun, OfflineDataset | None]:
    """The expert episodes ``expert_dataset=`` / ``expert_episodes=`` name (None without ``expert_dataset=``),
    checked against the run's task as ``dataset=`` is, and the run with what it imitates recorded.

    An expert dataset gives its first ``expert_episodes`` episodes in stored order (all by default);
    ``expert_dataset=safe-top`` gives the training dataset's episodes whose cost return is within the run's
    cost limit, highest reward return first (``expert_episodes`` of them, `SAFE_TOP_EPISODES` by default).
    """
    if not s.expert_dataset:
        return run, None
    name = str(s.expert_dataset)
    if name == SAFE_TOP:
        expert = safe_top_episodes(data, run.cost_limit, s.expert_episodes)
        source_id = run.dataset_id
    else:
        ensure(name, progress=s.progress)
        full = load(name, device=run.device, download=s.download)
        env = gym.make(run.task.env_id)
        try:
            check_compatible(full, env, name, run.task, s.allow_env_mismatch, option="expert_dataset")
        finally:
            env.close()
        count = full.num_episodes if s.expert_episodes is None else int(s.expert_episodes)
        if count > full.num_episodes:
            raise SaferlError(
                f"expert_episodes={count} but expert_dataset={name} holds {full.num_episodes} episodes; use "
                f"expert_episodes=<1..{full.num_episodes}>, or expert_episodes=null for all of them"
            )
        expert = full if count == full.num_episodes else full.take_episodes(torch.arange(count))
        source_id = full.metadata.get("dataset_id", name)
    source = ExpertSource(name, str(source_id), expert.num_episodes, expert.num_transitions)
    log.info("imitating %d expert episodes (%d transitions) of %s", source.episodes, source.transitions, name)
    return dataclasses.replace(run, expert=source), expert


def safe_top_episodes(data: OfflineDataset, cost_limit: float, count: int | None = None) -> OfflineDataset:
    """The ``count`` episodes of ``data`` with the highest reward return among those whose cost return is at
    most ``cost_limit``, best first (ties keep their stored order). ``count=None``: `SAFE_TOP_EPISODES`, or
    every safe episode when fewer are safe; a ``count`` beyond the safe episodes is refused."""
    costs, rewards = data.episode_costs.cpu(), data.episode_rewards.cpu()
    safe = torch.nonzero(costs <= cost_limit).squeeze(1)
    if safe.numel() == 0:
        raise SaferlError(
            f"expert_dataset={SAFE_TOP}: no episode of the training dataset has a cost return <= cost_limit="
            f"{cost_limit:g} (the lowest is {float(costs.min()):g}); raise cost_limit, or give expert episodes "
            "with expert_dataset=<Minari id or dataset directory>"
        )
    if count is not None and count > safe.numel():
        raise SaferlError(
            f"expert_episodes={count} but only {safe.numel()} episodes of the training dataset have a cost return "
            f"<= cost_limit={cost_limit:g} (expert_dataset={SAFE_TOP}); use expert_episodes=<1..{safe.numel()}>, "
            "or raise cost_limit"
        )
    count = min(SAFE_TOP_EPISODES, safe.numel()) if count is None else count
    best = safe[torch.argsort(rewards[safe], descending=True, stable=True)][:count]
    expert = data.take_episodes(best)
    expert.metadata["safe_top_episodes"] = best.tolist()  # their indices in the training dataset
    expert.metadata["from_training_data"] = True  # `union_with_expert`: already part of the training data
    return expert


def with_dataset_reward_range(task: TaskSpec, data: OfflineDataset) -> TaskSpec:
    """``task``, or, when it has no reference reward constants, ``task`` normalised by ``data``'s own range."""
    if task.reward_min is not None and task.reward_max is not None:
        return task
    # No reference build has fixed this task's R_min/R_max yet: use the training dataset's own episode
    # returns (the same definition, recorded at build time) and say so, since scores then depend on it.
    lo = data.metadata.get("reward_min", float(data.episode_rewards.min()))
    hi = data.metadata.get("reward_max", float(data.episode_rewards.max()))
    log.warning(
        "%s has no reference reward constants; normalising rewards with the dataset's own range [%g, %g]",
        task.name,
        lo,
        hi,
    )
    return task.with_reward_range(lo, hi)


def check_compatible(
    data: OfflineDataset,
    env: gym.Env,
    dataset_name: str,
    task: TaskSpec,
    allow_env_mismatch: bool = False,
    option: str = "dataset",
) -> None:
    """``data`` fits ``env`` (shapes), was recorded on ``task`` (unless ``allow_env_mismatch``) and is finite.
    ``option`` is the run option that named it (``dataset``, ``expert_dataset``), for the messages."""
    env_id = task.env_id
    obs_shape = env.observation_space.shape
    act_shape = env.action_space.shape
    if not isinstance(env.action_space, gym.spaces.Box) or obs_shape is None or len(obs_shape) != 1:
        raise DatasetError(f"{env_id}: saferl trains on flat Box observation and action spaces")
    if (data.obs_dim,) != obs_shape or (data.act_dim,) != act_shape:
        raise DatasetError(
            f"{option} {dataset_name} does not match env {env_id}: dataset observations have shape "
            f"({data.obs_dim},) and actions ({data.act_dim},), the env expects observations {obs_shape} and "
            f"actions {act_shape}; pick the dataset recorded on this env ({option}=...) or the matching env=..."
        )
    recorded = data.metadata.get("env_id")
    if not task.records_on(recorded) and not allow_env_mismatch:
        # Same shapes, other task: e.g. PointRobot data on BoatRobot trains without complaint and learns the
        # wrong dynamics, hazards and goal.
        own = f"train on env={task.name}'s own dataset (dataset={task.dataset_id})"
        if option != "dataset":
            own = f"give {option}= episodes recorded on {env_id}"
        raise DatasetError(
            f"{option} {dataset_name} was recorded on {recorded}, not on {env_id} (env={task.name}); {own}, pick "
            "the env it was recorded on, or pass allow_env_mismatch=true if you mean to train on another task's data"
        )
    bad = [
        name
        for name in ("observations", "actions", "rewards", "costs")
        if not bool(getattr(data, name).isfinite().all())
    ]
    if bad:
        raise DatasetError(f"{option} {dataset_name} contains NaN or inf in: {', '.join(bad)}")


def online_filter(name: str, task: TaskSpec) -> Callable[[gym.Env], gym.Env] | None:
    """``safety_filter=`` for online interaction: none, or cbf (the task's analytic barrier, `SafetyFilter`)."""
    if name == "none":
        return None
    if name != "cbf":
        raise SaferlError(f"safety_filter={name!r} is not known; use safety_filter=none or safety_filter=cbf")
    from saferl.safety import ControlAffineCBF, SafetyFilter

    try:
        barrier = ControlAffineCBF.for_task(task)
    except ValueError:
        known = ", ".join(sorted(n for n, t in TASKS.items() if t.barrier is not None and t.drift is not None))
        raise SaferlError(
            f"safety_filter=cbf needs a task with a known barrier and dynamics; {task.name} has none ({known} do)"
        ) from None
    return lambda env: SafetyFilter(env, barrier, on_infeasible="slack")
