"""The Python API: ``make`` → ``fit`` → ``evaluate`` → ``load_policy``, on the CLI's own code path.

``saferl.make`` composes the same Hydra config as ``python -m saferl.run`` (presets included), turns keyword
arguments into its overrides and checks them with the runs layer (`plan_run`: algorithm, options, task,
dataset) before anything is trained. ``Agent.fit`` then builds the seeded algorithm, the `Trainer` and the
phases exactly as `run_experiment` does, so an API run and a CLI run of the same config and seed end with the
same parameters and the same ``eval.json``, and a run directory written here loads with `load_run`.
``load_policy`` turns a run directory into a `Policy` that acts on a plain gymnasium env.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from saferl import evaluation
from saferl.algos import Algorithm, get_algorithm
from saferl.data import OfflineDataset, recipe_for
from saferl.envs import TASKS, TaskSpec, get_task
from saferl.errors import SaferlError
from saferl.runs import RunSettings, load_run, settings_from
from saferl.runs.experiment import RunPlan, plan_run, train_member
from saferl.runs.resolve import with_dataset_reward_range

CONF_DIR = Path(__file__).resolve().parent / "conf"
PRESETS = ("cpu", "paper")
# Options that define what ``make`` builds: they cannot change between ``make`` and ``fit``.
MAKE_ONLY = ("algo", "env", "dataset", "preset", "seeds", "expert_dataset", "expert_episodes")

__all__ = ["Agent", "Policy", "evaluate", "load_policy", "make"]


def make(
    algo: str,
    data: str | os.PathLike | OfflineDataset | None = None,
    *,
    env: str | None = None,
    preset: str = "cpu",
    **options: Any,
) -> Agent:
    """An untrained `Agent`: ``algo`` (a ``saferl.algos.REGISTRY`` name) on ``data`` (a Minari id, a dataset
    directory, an `OfflineDataset` loaded from one, or None for ``env``'s reference dataset).

    ``env`` is a task name (``point-robot``) or gymnasium id (``saferl/PointRobot-v0``); by default the task the
    dataset belongs to. ``options`` are the CLI's overrides as keywords: run options (``seed``, ``device``,
    ``cost_limit``, ``eval_episodes``, …, see ``conf/config.yaml``) and the algorithm's own fields (the CLI's
    ``algo.<field>=``, e.g. ``batch_size=64``). Everything is checked here, before any training: a missing
    saferl dataset is built, a dataset that does not fit the task is refused. Imitation algorithms take their
    expert episodes as ``expert_dataset=`` (a Minari id, a dataset directory or ``"safe-top"``) and
    ``expert_episodes=``, as the CLI does.
    """
    import saferl.algos  # noqa: F401  (stores the algo=<name> configs in Hydra's ConfigStore before we compose)

    algo_cls = get_algorithm(algo)
    dataset, given = _dataset_arg(data, options.pop("dataset", None))
    task = _task_for(env, dataset, given)
    if preset not in PRESETS:
        raise SaferlError(f"preset={preset!r} is not known; use one of {', '.join(PRESETS)}")
    if "seeds" in options:
        raise SaferlError(
            "seeds=[…] (K seeds as one batched model) is a CLI feature: run `python -m saferl.run 'seeds=[0,1]'`, "
            "or call saferl.make once per seed"
        )
    imitation = {k: options.pop(k) for k in ("expert_dataset", "expert_episodes") if k in options}
    expert = imitation.get("expert_dataset")
    if isinstance(expert, os.PathLike):
        imitation["expert_dataset"] = os.fspath(expert)
    elif expert is not None and not isinstance(expert, str):
        raise SaferlError(
            f"expert_dataset is a Minari id, a dataset directory or 'safe-top'; got {type(expert).__name__} (save an "
            "OfflineDataset with saferl's dataset writer and pass its directory)"
        )
    run_opts, algo_opts = _split_options(algo_cls, options)
    raw = _compose(algo, task.name, preset)
    raw["algo"].update(algo_opts)
    raw.update(run_opts)
    raw.update(imitation)
    if dataset is not None:
        raw["dataset"] = dataset
    settings, algo_opts = settings_from(raw)
    plan = plan_run(settings, algo_opts)
    if given is not None and given.observations.shape[0] != plan.data.observations.shape[0]:
        # An OfflineDataset changed in memory (select_episodes, …) cannot be recorded in config.yaml: a run must
        # be reproducible from its directory.
        raise SaferlError(
            f"the OfflineDataset passed to make has {given.observations.shape[0]} transitions but {dataset} holds "
            f"{plan.data.observations.shape[0]}; pass a dataset id or directory (save a modified dataset first)"
        )
    return Agent(settings, algo_opts, plan)


class Agent:
    """An algorithm of ``saferl.algos.REGISTRY`` with the run settings it trains under; `fit` trains it."""

    def __init__(self, settings: RunSettings, algo_opts: dict[str, Any], plan: RunPlan):
        self.settings, self.algo_opts, self.plan = settings, algo_opts, plan
        self.algorithm: Algorithm | None = None  # built by fit, seeded as the CLI seeds it
        self.result: dict[str, Any] | None = None  # fit's eval.json payload
        self.run_dir: Path | None = None  # None when fit wrote to a temporary directory
        self._policy: Policy | None = None

    @property
    def task(self) -> TaskSpec:
        """The task, with the reward range its scores are normalised by."""
        return self.plan.run.task

    def __repr__(self) -> str:
        state = f"trained, {self.plan.run.steps} steps" if self.algorithm is not None else "untrained"
        return f"Agent({self.settings.algo} on {self.settings.env}, seed {self.settings.seed}, {state})"

    def fit(self, steps: int | None = None, run_dir: str | os.PathLike | None = None, **options: Any) -> dict[str, Any]:
        """Train with the CLI's `Trainer` and phases (progress bar, periodic evaluation, checkpoints, NaN stop),
        evaluate, and return the ``eval.json`` payload.

        ``run_dir`` keeps the run directory (config.yaml, metrics.csv, checkpoints, eval.json: `load_policy`
        and ``python -m saferl.run ... resume=true`` read it); without it (and without ``runs_root=``) the run
        is written to a temporary directory that is removed afterwards. ``options``: run options that do not
        change what was made (``eval_every``, ``log_every``, ``progress``, ``online_steps``, ``resume``, …).
        """
        if self.algorithm is not None:
            raise SaferlError(
                f"this agent is already trained ({self.plan.run.steps} steps); call saferl.make(...) again to "
                "train another, or continue an unfinished run directory with fit(run_dir=..., resume=True)"
            )
        fixed = sorted(set(options) & set(MAKE_ONLY))
        if fixed:
            raise SaferlError(f"{', '.join(fixed)} cannot change after make; pass it to saferl.make(...)")
        run_opts, algo_opts = _split_options(get_algorithm(self.settings.algo), options)
        if algo_opts:
            raise SaferlError(
                f"algorithm option(s) {', '.join(sorted(algo_opts))} belong to saferl.make(...), which builds "
                "the algorithm; fit takes run options only"
            )
        if steps is not None:
            run_opts["steps"] = int(steps)
        temporary = run_dir is None and "runs_root" not in run_opts
        run_opts["run_dir"] = tempfile.mkdtemp(prefix="saferl-fit-") if temporary else run_dir
        if run_opts["run_dir"] is not None:
            run_opts["run_dir"] = str(run_opts["run_dir"])
        s = dataclasses.replace(self.settings, **run_opts)
        # Only the offline length and a few checks depend on these options: re-plan when they changed.
        plan = self.plan if s == dataclasses.replace(self.settings, run_dir=s.run_dir) else plan_run(s, self.algo_opts)
        try:
            result, member = train_member(plan, s)
        finally:
            if temporary:
                shutil.rmtree(s.run_dir, ignore_errors=True)
        self.settings, self.plan = s, plan
        self.algorithm, self.result = member.algo, result
        self.run_dir = None if temporary else member.trainer.run_dir.resolve()
        return result

    def policy(self) -> Policy:
        """The trained algorithm as a `Policy` (numpy in, numpy action in the env's box out)."""
        if self.algorithm is None:
            raise SaferlError("this agent is not trained yet; call agent.fit(...) first")
        return Policy(self.algorithm, self.task, self.plan.run.cost_limit, self.settings.seed, self.run_dir)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """`Policy.act` of the trained algorithm (one observation or a batch)."""
        if self._policy is None or self._policy.algorithm is not self.algorithm:
            self._policy = self.policy()
        return self._policy.act(obs)


class Policy:
    """A trained algorithm that acts on a plain gymnasium env: ``act(obs)`` takes one observation ``[obs_dim]``
    (or a batch ``[B, obs_dim]``) and returns a float32 action in the task's action box.

    Episodic algorithms (CDT conditions on returns-to-go, HNPG on the step index) keep per-episode context:
    call ``reset()`` at every episode start and ``observe(reward, cost)`` after every ``env.step``; `act`
    refuses to run without them. For the other algorithms both are no-ops, so one loop serves every policy.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        task: TaskSpec,
        cost_limit: float,
        seed: int = 0,
        run_dir: Path | None = None,
        dataset: str | None = None,
    ):
        self.algorithm, self.task, self.cost_limit, self.seed = algorithm.eval(), task, cost_limit, seed
        self.run_dir, self.dataset = run_dir, dataset
        ctx = algorithm.ctx
        self.action_space = gym.spaces.Box(
            np.asarray(ctx.action_low, np.float32), np.asarray(ctx.action_high, np.float32), dtype=np.float32
        )
        context = algorithm.episodic_policy()
        self._episodic = context if isinstance(context, evaluation.EpisodicPolicy) else None
        self._envs = 0  # episodes under way (episodic algorithms)
        self._t = 0
        self._awaiting: np.ndarray | None = None  # ids acted on, waiting for observe()

    @property
    def episodic(self) -> bool:
        return self._episodic is not None

    def __repr__(self) -> str:
        where = f", {self.run_dir}" if self.run_dir else ""
        return f"Policy({self.algorithm.name} on {self.task.name}{where})"

    def reset(self, num_envs: int = 1) -> None:
        """Start new episodes (``num_envs`` envs stepped in lock-step); needed by episodic algorithms."""
        if self._episodic is not None:
            self._episodic.reset(num_envs)
        self._envs, self._t, self._awaiting = num_envs, 0, None

    def observe(self, reward: float | np.ndarray, cost: float | np.ndarray) -> None:
        """Tell an episodic policy the reward and cost of the step just taken (``info["cost"]``)."""
        if self._episodic is None:
            return
        if self._awaiting is None:
            raise SaferlError("observe() follows an act(): call policy.act(obs), env.step(action), then observe")
        ids, self._awaiting = self._awaiting, None
        n = len(ids)
        rewards = np.array(np.broadcast_to(np.asarray(reward, dtype=np.float64), (n,)))  # a writable copy
        costs = np.array(np.broadcast_to(np.asarray(cost, dtype=np.float64), (n,)))
        self._episodic.observe(ids, rewards, costs)
        self._t += 1

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        obs_dim = self.algorithm.ctx.obs_dim
        if batch.ndim != 2 or batch.shape[1] != obs_dim:
            raise SaferlError(
                f"{self.task.name} observations have shape ({obs_dim},) (or a batch (B, {obs_dim})); got {obs.shape}"
            )
        if self._episodic is None:
            action = self.algorithm.act(batch)
        else:
            action = self._act_episodic(batch)
        action = np.clip(action, self.action_space.low, self.action_space.high).astype(np.float32)
        return action[0] if single else action

    def _act_episodic(self, batch: np.ndarray) -> np.ndarray:
        name = self.algorithm.name
        if self._envs == 0:
            self.reset(len(batch))
        if self._awaiting is not None:
            raise SaferlError(
                f"{name} keeps per-episode context: call policy.observe(reward, info['cost']) after every env.step "
                "(and policy.reset() at every episode start)"
            )
        if len(batch) != self._envs:
            raise SaferlError(f"policy.reset({self._envs}) started {self._envs} episode(s); got {len(batch)} obs")
        if self._t >= self.algorithm.ctx.max_episode_steps:
            raise SaferlError(
                f"{name}'s episode context holds {self.algorithm.ctx.max_episode_steps} steps (the task's episode "
                "length); call policy.reset() at every episode start"
            )
        ids = np.arange(self._envs)
        action = self._episodic.act(batch, ids)
        self._awaiting = ids
        return np.asarray(action)


def load_policy(run_dir: str | os.PathLike, device: str = "cpu") -> Policy:
    """The trained policy of a run directory (written by ``python -m saferl.run`` or ``Agent.fit``), rebuilt
    with `saferl.runs.load_run`; nothing else of the training code is needed to act with it."""
    algorithm, task, cfg, _ = load_run(run_dir, device=device)
    return Policy(algorithm, task, float(cfg["cost_limit"]), int(cfg["seed"]), Path(run_dir), cfg.get("dataset"))


def evaluate(
    agent: Agent | Policy | Algorithm,
    env: str | None = None,
    episodes: int = 20,
    cost_limit: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Roll ``agent`` out on ``env`` (task name or gymnasium id; default: the task it was trained on) for
    ``episodes`` episodes and return the metric block of ``eval.json``: reward and cost means and stds, the
    DSRL normalized reward, the normalized cost and safety at the task's thresholds and ``cost_limit`` (default:
    the run's), and the violation fraction. The rollout is `saferl.evaluation.rollout` with the CLI's policy,
    evaluation wrapper and seeds (default: the run's seed), so a run's ``eval.json`` is reproduced for
    deterministic policies; torch's RNG is seeded from ``seed`` inside and restored afterwards.
    """
    algorithm, own_task, own_limit, own_seed, dataset = _unpack(agent)
    task = own_task if env is None or get_task(env).name == own_task.name else get_task(env)
    task = _with_reward_range(task, dataset if task.name == own_task.name else None)
    limit = float(cost_limit if cost_limit is not None else own_limit if task is own_task else task.default_cost_limit)
    seed = own_seed if seed is None else int(seed)
    thresholds = evaluation.eval_thresholds(task, limit)
    wrap = algorithm.wrap_eval_env if algorithm.wraps_eval_env else None
    devices = [algorithm.ctx.device] if algorithm.ctx.device.type == "cuda" else []
    algorithm.eval()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            stats = evaluation.rollout(task.env_id, algorithm.episodic_policy(), episodes, seed, wrap_env=wrap)
            plain = evaluation.rollout(task.env_id, algorithm.episodic_policy(), episodes, seed) if wrap else None
        except ValueError as err:  # episodes < 1
            raise SaferlError(str(err)) from None
    result = {"env": task.name, "seed": seed, "cost_limit": limit, **_metrics(stats, task, thresholds)}
    if plain is not None:  # as eval.json: the same policy without its evaluation wrapper, for comparison
        result["unfiltered"] = _metrics(plain, task, thresholds)
    return result


def _metrics(stats: evaluation.RolloutStats, task: TaskSpec, thresholds: list[float]) -> dict[str, Any]:
    return {**evaluation.dsrl_metrics(stats, task, thresholds), **evaluation.safety_metrics(stats)}


def _unpack(agent: Agent | Policy | Algorithm) -> tuple[Algorithm, TaskSpec, float, int, str | None]:
    """The algorithm, its task (with reward range), cost limit, seed and dataset, whatever was passed."""
    if isinstance(agent, Agent):
        if agent.algorithm is None:
            raise SaferlError("this agent is not trained yet; call agent.fit(...) before saferl.evaluate")
        run = agent.plan.run
        return agent.algorithm, run.task, run.cost_limit, agent.settings.seed, run.dataset
    if isinstance(agent, Policy):
        return agent.algorithm, agent.task, agent.cost_limit, agent.seed, agent.dataset
    if isinstance(agent, Algorithm):
        if agent.ctx.task is None:
            raise SaferlError("this algorithm was built without a task; pass an Agent or a Policy to evaluate")
        return agent, agent.ctx.task, agent.ctx.cost_limit, 0, None
    raise SaferlError(
        f"saferl.evaluate takes an Agent (saferl.make), a Policy (saferl.load_policy) or an Algorithm; got "
        f"{type(agent).__name__}"
    )


def _with_reward_range(task: TaskSpec, dataset: str | None) -> TaskSpec:
    """Tasks without reference reward constants are scored with their training dataset's range, as runs are."""
    if task.reward_min is not None and task.reward_max is not None:
        return task
    if dataset is None:
        raise SaferlError(
            f"task {task.name} has no reward normalisation constants; evaluate the agent trained on it (its "
            "dataset gives the range) or build its reference dataset first"
        )
    from saferl.data import load

    return with_dataset_reward_range(task, load(dataset))


def _dataset_arg(
    data: str | os.PathLike | OfflineDataset | None, dataset: str | None
) -> tuple[str | None, OfflineDataset | None]:
    """The dataset to record in the run's config (id or directory), and the OfflineDataset if one was given."""
    if data is not None and dataset is not None:
        raise SaferlError(f"make got a dataset twice ({data!r} and dataset={dataset!r}); pass one")
    data = data if data is not None else dataset
    if isinstance(data, OfflineDataset):
        # Its directory: the run reloads exactly these bytes, and config.yaml can name them.
        source = data.metadata.get("path") or data.metadata.get("dataset_id")
        if source is None:
            raise SaferlError("this OfflineDataset names no dataset id or directory; pass the id or directory")
        return str(source), data
    if data is not None and not isinstance(data, str | os.PathLike):
        raise SaferlError(f"make's data is a Minari id, a dataset directory or an OfflineDataset; got {data!r}")
    return (os.fspath(data) if data is not None else None), None


def _task_for(env: str | None, dataset: str | None, given: OfflineDataset | None) -> TaskSpec:
    """``env``, else the task the dataset was recorded on."""
    if env is not None:
        return get_task(env)
    if dataset is None:
        raise SaferlError(f"make needs a dataset or env=<task>; tasks: {', '.join(sorted(TASKS))}")
    recipe = recipe_for(dataset)
    if recipe is not None:
        return get_task(recipe.task)
    recorded = given.metadata.get("env_id") if given is not None else _recorded_env(dataset)
    for task in TASKS.values():
        if recorded is not None and (task.records_on(recorded) or task.dataset_id == dataset):
            return task
    raise SaferlError(
        f"cannot tell which task {dataset} belongs to (recorded on {recorded}); pass env=<task>, one of "
        f"{', '.join(sorted(TASKS))}"
    )


def _recorded_env(dataset: str) -> str | None:
    from saferl.data import load

    try:
        return load(dataset).metadata.get("env_id")
    except SaferlError:
        return None  # the runs layer reports a missing or broken dataset with its own message


def _split_options(algo_cls: type[Algorithm], options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options → (run options, algorithm fields); ``steps`` is the run's (it overrides ``algo.steps``)."""
    run_fields = set(RunSettings.__dataclass_fields__) - set(MAKE_ONLY)
    algo_fields = {f.name for f in dataclasses.fields(algo_cls.Config)}
    unknown = sorted(set(options) - run_fields - algo_fields)
    if unknown:
        raise SaferlError(
            f"unknown option(s) {', '.join(unknown)} for {algo_cls.name}; run options are "
            f"{', '.join(sorted(run_fields))}; {algo_cls.name}'s options are {', '.join(sorted(algo_fields))}"
        )
    run = {k: v for k, v in options.items() if k in run_fields}
    algo = {k: v for k, v in options.items() if k not in run_fields}
    return run, algo


def _compose(algo: str, env: str, preset: str) -> dict[str, Any]:
    """The CLI's composed config for ``algo=… env=… preset=…`` as a plain dict (keyword options merge over it
    as Python values, so nothing needs quoting as a Hydra override)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if GlobalHydra.instance().is_initialized():
        raise SaferlError(
            "saferl.make composes saferl's Hydra config and cannot run inside another Hydra app's main; "
            "call it outside, or use saferl.runs.run_experiment with your composed config"
        )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"algo={algo}", f"env={env}", f"preset={preset}"])
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw
