"""Benchmark suites: what to run (algorithms × tasks × seeds × cost thresholds, each with its budget).

A suite is a YAML file in ``saferl/conf/suite/`` (Hydra config group ``suite``)::

    name: quick
    seeds: [0, 1, 2]
    cost_limits: null            # null: each task's own thresholds (saferl.envs.TASKS); or e.g. [10, 20, 40]
    overrides: [eval_episodes=10] # `python -m saferl.run` overrides for every run
    tasks:
      point-robot: {}            # optional per task: dataset: <Minari id or path>, cost_limits: [...],
                                 # env: <task> (the key is then only the board's label), overrides: [...]
    algos:
      bc_all:                    # the agent's label on the leaderboard
        algo: bc_all             # registered algorithm (default: the label)
        per_threshold: false     # trains the same model whatever κ is: one run per seed, scored at every κ
        overrides: [steps=2000, "algo.hidden=[64,64]"]

`expand` turns a suite into `RunSpec`s, one per run. Every run gets a deterministic directory
``<runs_root>/<task>/<agent>/seed<s>[-k<κ>]-<hash>``, where the hash covers the run's composed config
(algorithm options included, run-management options such as ``threads`` excluded): rerunning a suite finds
its runs again, and changing a budget or a hyperparameter gives new runs instead of silently reusing old ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saferl.runs.errors import SaferlError

log = logging.getLogger("saferl")

# Options that change where or how a run executes, not what it computes: left out of the run's identity.
_NOT_IDENTITY = (
    "run_dir",
    "resume",
    "runs_root",
    "threads",
    "progress",
    "tensorboard",
    "log_every",
    "checkpoint_every",
    "download",
    "preset",  # what it changes is in the composed algo options, which are part of the identity
)


# suite `score:` -> the eval.json key of the normalized reward the board ranks by
SCORES = {"dsrl": "normalized_reward", "d4rl": "d4rl_normalized_reward"}


class SuiteError(SaferlError):
    """A suite that cannot run as defined (the message says what is missing and how to get it)."""


@dataclass(frozen=True)
class AgentSpec:
    label: str
    algo: str
    per_threshold: bool = True
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskEntry:
    name: str  # the board's label for this row of tasks (and the run directories' folder)
    dataset: str | None = None
    cost_limits: tuple[float, ...] | None = None
    env: str = ""  # the saferl task it trains on; "" = the label itself
    overrides: tuple[str, ...] = ()  # `saferl.run` overrides for this entry's runs (e.g. expert_dataset=...)

    @property
    def task(self) -> str:
        return self.env or self.name


@dataclass
class Suite:
    name: str
    seeds: tuple[int, ...]
    tasks: tuple[TaskEntry, ...]
    agents: tuple[AgentSpec, ...]
    overrides: tuple[str, ...] = ()
    cost_limits: tuple[float, ...] | None = None
    description: str = ""
    # the reward the board scores: "dsrl" (eval.json's normalized_reward, by the task's R_min/R_max) or "d4rl"
    # (d4rl_normalized_reward, by the training dataset's random/expert reference returns; reward-only suites)
    score: str = "dsrl"
    missing_hint: str = ""  # how to get what is missing (shown when a task, dataset or algorithm is absent)

    def thresholds(self, task: str) -> tuple[float, ...]:
        """The cost thresholds κ the suite scores ``task`` at (the task entry's, the suite's, or the task's own)."""
        entry = next(t for t in self.tasks if t.name == task)
        if entry.cost_limits is not None:
            return entry.cost_limits
        if self.cost_limits is not None:
            return self.cost_limits
        from saferl.envs import get_task

        return tuple(float(k) for k in get_task(entry.task).cost_thresholds)


@dataclass
class RunSpec:
    """One training run of a suite."""

    agent: str
    algo: str
    task: str
    seed: int
    cost_limit: float  # κ the run trains with (the task's default for threshold-free agents)
    per_threshold: bool
    overrides: list[str]  # the complete `python -m saferl.run` command line of this run
    run_dir: Path
    config: dict[str, Any] = field(default_factory=dict, repr=False)  # composed config, plain containers

    @property
    def key(self) -> str:
        return str(self.run_dir)

    @property
    def label(self) -> str:
        kappa = f" κ={self.cost_limit:g}" if self.per_threshold else ""
        return f"{self.agent} on {self.task} seed {self.seed}{kappa}"

    def command(self) -> str:
        """The equivalent `python -m saferl.run` command line (shell-quoted)."""
        return "python -m saferl.run " + " ".join(shlex.quote(o) for o in self.overrides)


def _floats(value: Any, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        value = [value]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise SuiteError(f"{what} must be a list of numbers, got {value!r}") from None
    if any(not math.isfinite(k) or k < 0 for k in out):
        raise SuiteError(f"{what} must be finite and >= 0, got {list(out)}")
    return out


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split()
    if not all(isinstance(v, str) for v in value):
        raise SuiteError(f"{what} must be a list of `key=value` override strings, got {value!r}")
    return tuple(value)


def parse_suite(raw: Any) -> Suite:
    """Build a `Suite` from its YAML content (a DictConfig or plain dict)."""
    from omegaconf import DictConfig, OmegaConf

    data = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else dict(raw)
    known = {"name", "description", "seeds", "cost_limits", "overrides", "tasks", "algos", "missing_hint", "score"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SuiteError(f"unknown suite key(s) {', '.join(unknown)}; a suite has {', '.join(sorted(known))}")
    name = str(data.get("name") or "")
    if not name:
        raise SuiteError("a suite needs a name")
    seeds = data.get("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) != len(seeds):
        raise SuiteError(f"suite {name}: seeds must be a non-empty list of distinct integers, got {seeds!r}")
    tasks = []
    for task, opts in (data.get("tasks") or {}).items():
        opts = dict(opts or {})
        bad = sorted(set(opts) - {"dataset", "cost_limits", "env", "overrides"})
        if bad:
            raise SuiteError(
                f"suite {name}, task {task}: unknown key(s) {', '.join(bad)} (dataset, cost_limits, env, overrides)"
            )
        tasks.append(
            TaskEntry(
                str(task),
                opts.get("dataset"),
                _floats(opts.get("cost_limits"), f"{task}.cost_limits"),
                env=str(opts.get("env") or ""),
                overrides=_strings(opts.get("overrides"), f"{task}.overrides"),
            )
        )
    agents = []
    for label, opts in (data.get("algos") or {}).items():
        opts = dict(opts or {})
        bad = sorted(set(opts) - {"algo", "per_threshold", "overrides"})
        if bad:
            raise SuiteError(
                f"suite {name}, agent {label}: unknown key(s) {', '.join(bad)} (algo, per_threshold, overrides)"
            )
        agents.append(
            AgentSpec(
                label=str(label),
                algo=str(opts.get("algo") or label),
                per_threshold=bool(opts.get("per_threshold", True)),
                overrides=_strings(opts.get("overrides"), f"{label}.overrides"),
            )
        )
    if not tasks or not agents:
        raise SuiteError(f"suite {name} needs at least one task and one algorithm")
    score = str(data.get("score") or "dsrl")
    if score not in SCORES:
        raise SuiteError(f"suite {name}: score={score!r} is not known; use {' or '.join(SCORES)}")
    return Suite(
        name=name,
        description=str(data.get("description") or ""),
        seeds=tuple(seeds),
        tasks=tuple(tasks),
        agents=tuple(agents),
        overrides=_strings(data.get("overrides"), "overrides"),
        cost_limits=_floats(data.get("cost_limits"), "cost_limits"),
        score=score,
        missing_hint=str(data.get("missing_hint") or ""),
    )


# ---------------------------------------------------------------------------------------------------
# availability: everything a suite needs, checked before anything runs


def dataset_available(dataset: str) -> bool:
    """True when ``dataset`` is a local Minari directory or id, or a saferl recipe can build it."""
    from saferl.data import minari_io, recipe_for

    recipe = recipe_for(dataset)
    if recipe is not None and not getattr(recipe, "expensive", False):
        return True  # built on the fly in seconds
    if (Path(dataset).expanduser() / "data" / "metadata.json").is_file():
        return True
    return (minari_io.dataset_dir(dataset) / "data" / "metadata.json").is_file()


def check_available(suite: Suite, need_data: bool = True) -> None:
    """Raise `SuiteError` naming every missing task, dataset (when ``need_data``) and algorithm, and how to
    get them."""
    from saferl.algos import REGISTRY
    from saferl.envs import TASKS

    problems = []
    missing_tasks = [t.task for t in suite.tasks if t.task not in TASKS]
    if missing_tasks:
        problems.append(
            f"task(s) {', '.join(missing_tasks)} are not in saferl.envs.TASKS (available: {', '.join(sorted(TASKS))})"
        )
    missing_data = []
    for entry in suite.tasks if need_data else ():
        if entry.task in TASKS:
            dataset = entry.dataset or TASKS[entry.task].dataset_id
            if not dataset_available(dataset):
                missing_data.append(f"{dataset} (task {entry.name})")
        elif entry.dataset and not dataset_available(entry.dataset):
            missing_data.append(f"{entry.dataset} (task {entry.name})")
    if missing_data:
        problems.append(
            f"dataset(s) {', '.join(missing_data)} are not under MINARI_DATASETS_PATH; build a task's dataset "
            "with `python -m saferl.collect env=<task> budget=full` (MuJoCo tasks train SAC behaviour policies: "
            "tens of minutes each) or point the suite at one with suite.tasks.<task>.dataset=<Minari id or "
            "directory>"
        )
    missing_algos = sorted({a.algo for a in suite.agents if a.algo not in REGISTRY})
    if missing_algos:
        problems.append(
            f"algorithm(s) {', '.join(missing_algos)} are not registered (available: {', '.join(sorted(REGISTRY))})"
        )
    if problems:
        hint = f"\n  {suite.missing_hint.strip()}" if suite.missing_hint.strip() else ""
        raise SuiteError(f"suite {suite.name} cannot run:\n  - " + "\n  - ".join(problems) + hint)


# ---------------------------------------------------------------------------------------------------
# expansion


def _compose(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except HydraException as err:
        raise SuiteError(f"invalid overrides {' '.join(overrides)}: {err}") from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _validate(config: dict[str, Any], where: str) -> None:
    """The checks run_experiment does before training, done up front so a typo fails the suite at once."""
    from saferl.algos import get_algorithm
    from saferl.runs.settings import settings_from

    try:
        settings, algo_opts = settings_from(dict(config))
        get_algorithm(settings.algo).make_config(algo_opts)
    except (SaferlError, TypeError, ValueError) as err:
        raise SuiteError(f"{where}: {err}") from None
    if settings.seeds is not None:  # a suite run is one seed and one run directory; the suite lists the seeds
        raise SuiteError(f"{where}: seeds={settings.seeds} in an override; give the seeds as the suite's seeds: list")


def value_problem(config: dict[str, Any]) -> str | None:
    """What each of the runs composed from ``config`` will refuse before training (a budget, an interval, an
    episode count or a cost limit out of range: `saferl.runs.settings.check_settings`), or None."""
    from saferl.algos import get_algorithm
    from saferl.runs.settings import check_settings, offline_steps, settings_from

    settings, algo_opts = settings_from(dict(config))
    algo_cls = get_algorithm(settings.algo)
    try:
        check_settings(settings, algo_cls, offline_steps(settings, algo_cls.make_config(algo_opts).steps))
    except SaferlError as err:
        return str(err)
    return None


# Options added after suites had run: left out of the identity while unset, so earlier runs keep their directories.
_IDENTITY_WHEN_SET = ("expert_dataset", "expert_episodes")


def run_hash(config: dict[str, Any]) -> str:
    identity = {
        k: v for k, v in config.items() if k not in _NOT_IDENTITY and not (k in _IDENTITY_WHEN_SET and v is None)
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def expand(
    suite: Suite, runs_root: Path, extra_overrides: tuple[str, ...] = (), need_data: bool = True
) -> list[RunSpec]:
    """All runs of the suite, in a stable order (task, agent, κ, seed), with composed and validated configs.

    ``extra_overrides`` apply to every run after the suite's own (e.g. ``device=cuda``). Reports need the
    tasks and algorithms (for the run identities) but not the datasets: ``need_data=False``.
    """
    check_available(suite, need_data)
    from saferl.envs import get_task
    from saferl.runs.resolve import resolve_cost_limit

    specs: list[RunSpec] = []
    refused: list[str] = []  # agents whose every run will refuse its options before training
    for entry in suite.tasks:
        task = get_task(entry.task)
        kappas = suite.thresholds(entry.name)
        for agent in suite.agents:
            base = [f"algo={agent.algo}", f"env={entry.task}"]
            if entry.dataset:
                base.append(f"dataset={entry.dataset}")
            base += [*suite.overrides, *entry.overrides, *agent.overrides, *extra_overrides]
            # Compose once per (task, agent); seed and cost_limit are plain top-level keys set per run.
            composed = _compose(base)
            _validate(composed, f"suite {suite.name}, agent {agent.label} on {entry.name}")
            # threshold-free agents train at the run's own cost limit, resolved as every run resolves it
            run_kappas = kappas if agent.per_threshold else (resolve_cost_limit(composed.get("cost_limit"), task),)
            problem = value_problem({**composed, "cost_limit": float(run_kappas[0])})
            if problem:
                refused.append(f"agent {agent.label} on {entry.name}: {problem}")
            for kappa in run_kappas:
                for seed in suite.seeds:
                    config = {**composed, "seed": seed, "cost_limit": float(kappa)}
                    name = f"seed{seed}" + (f"-k{kappa:g}" if agent.per_threshold else "") + f"-{run_hash(config)}"
                    run_dir = runs_root / entry.name / agent.label / name
                    overrides = [*base, f"seed={seed}", f"cost_limit={kappa:g}", f"run_dir={run_dir}", "resume=true"]
                    config.update(run_dir=str(run_dir), resume=True)
                    specs.append(
                        RunSpec(
                            agent=agent.label,
                            algo=agent.algo,
                            task=entry.name,
                            seed=seed,
                            cost_limit=float(kappa),
                            per_threshold=agent.per_threshold,
                            overrides=overrides,
                            run_dir=run_dir,
                            config=config,
                        )
                    )
    n_pairs = len(suite.tasks) * len(suite.agents)
    if refused and len(refused) == n_pairs:  # nothing could train: say so now instead of failing every run
        raise SuiteError(f"suite {suite.name}: every run would refuse its options:\n  - " + "\n  - ".join(refused))
    for line in refused:  # one failing agent never stops a suite: its runs fail (and say why), the others train
        log.warning("suite %s: the runs of %s will fail", suite.name, line)
    return specs


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
SUITE_DIR = CONF_DIR / "suite"


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITE_DIR.glob("*.yaml"))
