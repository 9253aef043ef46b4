"""The run-level options of a composed Hydra config, and the checks on them that need no data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from saferl.algos import AlgoConfig, Algorithm
from saferl.algos.registry import no_online_phase_message
from saferl.runs.errors import SaferlError

AMP_MODES = ("none", "bf16")
# expert_dataset=safe-top: the expert episodes are the training dataset's own, those with a cost return within
# the run's cost limit κ, best reward return first; expert_episodes= of them (SAFE_TOP_EPISODES by default)
SAFE_TOP = "safe-top"
SAFE_TOP_EPISODES = 10


@dataclass
class RunSettings:
    """The run-level options of the composed Hydra config (see ``conf/config.yaml``)."""

    algo: str
    env: str
    seed: int = 0
    seeds: list[int] | None = None  # K seeds trained as one batched model (saferl.runs.seeds); one run dir each
    steps: int | None = None
    device: str = "cpu"
    cost_limit: float | None = None
    eval_episodes: int = 20
    eval_every: int = 0
    log_every: int = 500
    checkpoint_every: int = 2000
    resume: bool = False
    dataset: str | None = None
    download: bool = False
    run_dir: str | None = None
    runs_root: str = "runs"
    threads: int | None = None
    progress: bool = True
    tensorboard: bool = True
    amp: str = "none"  # "bf16": bf16 autocast around the update (opt-in, see benchmarks/throughput.md)
    compile: bool = False  # torch.compile the update (opt-in; no gain measured on CPU)
    # offline→online (algorithms with an online phase; see saferl/online.py)
    offline_steps: int | None = None  # the same as steps=, named for offline→online runs
    online_steps: int = 0  # env steps of online fine-tuning after the offline phase
    online_eval_every: int = 0  # env steps between online evaluations; 0 = ten evaluations
    online_envs: int = 1  # envs stepped in lock-step during online interaction
    init_from: str | None = None  # a run dir or checkpoint: start online from its offline policy
    safety_filter: str = "none"  # "cbf": online interaction through SafetyFilter with the task's barrier
    allow_env_mismatch: bool = False  # train on a dataset recorded on another task whose shapes match
    # imitation (algorithms whose expert_data is optional or required: saferl.runs.resolve.resolve_expert)
    expert_dataset: str | None = None  # expert episodes: a Minari id or dataset directory, or "safe-top"
    expert_episodes: int | None = None  # the first N episodes of expert_dataset; None = all (safe-top: 10)
    preset: str = "cpu"  # the algorithm sizes composed into algo (conf/algo_preset); recorded for the record


def settings_from(cfg: Any) -> tuple[RunSettings, dict[str, Any]]:
    """Split a composed config (DictConfig or dict) into run settings and the algorithm's options."""
    from omegaconf import DictConfig, OmegaConf

    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    algo_opts = dict(raw.pop("algo"))
    env_opts = dict(raw.pop("env"))
    raw.pop("hydra", None)
    if isinstance(raw.get("preset"), dict):  # the preset config group: {name: cpu|paper}
        raw["preset"] = raw["preset"]["name"]
    known = set(RunSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SaferlError(f"unknown option(s) {', '.join(unknown)}; run options are {', '.join(sorted(known))}")
    settings = RunSettings(algo=algo_opts.pop("name"), env=env_opts["name"], **raw)
    return settings, algo_opts


def make_algo_config(algo_cls: type[Algorithm], algo_opts: dict[str, Any]) -> AlgoConfig:
    try:
        return algo_cls.make_config(algo_opts)
    except (TypeError, ValueError) as err:
        raise SaferlError(str(err)) from None


def offline_steps(s: RunSettings, default: int) -> int:
    """``steps=`` and its offline→online name ``offline_steps=`` (they must agree when both are given)."""
    for name in ("steps", "offline_steps"):
        value = getattr(s, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise SaferlError(
                f"{name}={value!r} is not allowed: {name} is a number of gradient updates, a whole number >= 1; "
                f"use e.g. {name}=10000, or "
                f"{name}=null for the algorithm's default"
            )
    if s.offline_steps is not None and s.steps is not None and int(s.offline_steps) != int(s.steps):
        raise SaferlError(
            f"steps={s.steps} and offline_steps={s.offline_steps} disagree; they name the same thing, give one"
        )
    value = s.offline_steps if s.offline_steps is not None else s.steps
    return int(value if value is not None else default)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(name: str, value: Any, least: int, fix: str) -> None:
    if not _is_int(value) or value < least:
        raise SaferlError(f"{name}={value!r} is not allowed: {name} must be >= {least} (a whole number); {fix}")


def check_values(s: RunSettings, steps: int, online_capable: bool = True, base_policy: bool = False) -> None:
    """Each option on its own: budgets, intervals, episode counts, the cost limit (``steps`` = the resolved
    offline length; ``base_policy``: init_from= names a policy to adjust, not an offline phase that happened
    elsewhere). Every message names the value and what to use instead."""
    if not _is_int(steps) or steps < 0:
        raise SaferlError(
            f"steps={steps!r} is not allowed: steps is the number of gradient updates, an integer >= 1; "
            "use e.g. steps=10000, or steps=null for the algorithm's default"
        )
    _check_int("online_steps", s.online_steps, 0, "use online_steps=0 for an offline-only run, or N env steps")
    if steps == 0 and s.online_steps == 0 and (base_policy or not s.init_from):
        raise SaferlError(
            f"steps=0 with online_steps=0 trains nothing (algo={s.algo}): the result would be an untrained "
            "policy; use steps=<N> > 0 gradient updates"
            + (", or online_steps=<N> env steps for an online phase" if online_capable else "")
        )
    _check_int("eval_episodes", s.eval_episodes, 1, "use e.g. eval_episodes=20")
    _check_int("eval_every", s.eval_every, 0, "use eval_every=0 to evaluate only at the end, or N steps")
    _check_int("log_every", s.log_every, 1, "use a positive interval in steps, e.g. log_every=500")
    _check_int(
        "checkpoint_every",
        s.checkpoint_every,
        1,
        "use a positive interval in steps, e.g. checkpoint_every=2000 (the last step is always checkpointed)",
    )
    _check_int("online_eval_every", s.online_eval_every, 0, "use online_eval_every=0 for ten evaluations, or N")
    _check_int("online_envs", s.online_envs, 1, "use online_envs=1 (or more envs stepped in lock-step)")
    if s.threads is not None:
        _check_int("threads", s.threads, 0, "use threads=null (torch's default) or a number of threads >= 1")
    if not _is_int(s.seed):
        raise SaferlError(f"seed={s.seed!r} is not an integer; use e.g. seed=0")
    if s.cost_limit is not None:
        try:
            limit = float(s.cost_limit)
        except (TypeError, ValueError):
            limit = math.nan
        if isinstance(s.cost_limit, bool) or not math.isfinite(limit) or limit < 0:
            raise SaferlError(
                f"cost_limit={s.cost_limit!r} is not allowed: the episode cost limit must be a finite number >= 0 "
                "(0 = no cost at all); use e.g. cost_limit=10, or cost_limit=null for the task's default"
            )


def check_settings(s: RunSettings, algo_cls: type[Algorithm], steps: int | None = None) -> None:
    """The options that must make sense together before anything is loaded or written (``steps``: the resolved
    offline length; None skips the checks of each value on its own)."""
    if s.safety_filter not in ("none", "cbf"):
        raise SaferlError(
            f"safety_filter={s.safety_filter!r} is not known; use safety_filter=none or safety_filter=cbf"
        )
    if algo_cls.base_policy and not s.init_from:
        raise SaferlError(
            f"algo={s.algo} adjusts the trained policy of another run and needs init_from=<run dir> of that run "
            f"(a finished run of iql, td3bc, cql, bc_all, bc_safe, fisor, ... on env={s.env}, e.g. "
            f"init_from=runs/{s.env}/iql/seed0-<time>); train one first with python -m saferl.run algo=iql env={s.env}"
        )
    if steps is not None:
        check_values(s, steps, algo_cls.online_mode is not None, algo_cls.base_policy)
    if s.online_steps < 0:
        raise SaferlError(f"online_steps must be >= 0, got {s.online_steps}")
    if s.online_steps > 0 and algo_cls.online_mode is None:
        raise SaferlError(f"{no_online_phase_message(s.algo)} (online_steps={s.online_steps})")
    if s.online_steps == 0 and ((s.init_from and not algo_cls.base_policy) or s.safety_filter != "none"):
        raise SaferlError("init_from= and safety_filter= apply to the online phase: also pass online_steps=<env steps>")
    if s.online_envs < 1:
        raise SaferlError(f"online_envs must be >= 1, got {s.online_envs}")
    if s.amp not in AMP_MODES:
        raise SaferlError(f"amp={s.amp!r} is not supported; use amp=none or amp=bf16")
    check_expert(s, algo_cls)


def expert_readers() -> list[str]:
    """The registered algorithms that read ``expert_dataset=``."""
    from saferl.algos import REGISTRY
    from saferl.algos.base import ExpertData

    return sorted(n for n, c in REGISTRY.items() if c.expert_data != ExpertData.NONE)


def check_expert(s: RunSettings, algo_cls: type[Algorithm]) -> None:
    """``expert_dataset=`` / ``expert_episodes=`` against what the algorithm does with expert data (no data is
    read: the dataset itself is checked by `saferl.runs.resolve.resolve_expert`)."""
    from saferl.algos.base import ExpertData

    given = bool(s.expert_dataset)  # an empty expert_dataset= means none, as dataset= means the default
    if algo_cls.expert_data == ExpertData.REQUIRED and not given:
        raise SaferlError(
            f"algo={s.algo} imitates expert demonstrations and needs expert_dataset=<Minari id or dataset directory> "
            f"(the expert episodes), or expert_dataset={SAFE_TOP} to imitate the training dataset's best episodes "
            "within cost_limit; expert_episodes=<N> takes the first N of them"
        )
    if algo_cls.expert_data == ExpertData.NONE and given:
        raise SaferlError(
            f"algo={s.algo} does not read expert data (expert_dataset={s.expert_dataset}); the algorithms that do "
            f"are {', '.join(expert_readers())}: use one of them, or drop expert_dataset="
        )
    if s.expert_episodes is None:
        return
    if not given:
        raise SaferlError(
            f"expert_episodes={s.expert_episodes!r} without expert_dataset=: name where the expert episodes come "
            f"from (expert_dataset=<Minari id or dataset directory>, or expert_dataset={SAFE_TOP})"
        )
    if not _is_int(s.expert_episodes) or s.expert_episodes < 1:
        raise SaferlError(
            f"expert_episodes={s.expert_episodes!r} is not allowed: it is a number of expert episodes, a whole "
            "number >= 1; use e.g. expert_episodes=5, or expert_episodes=null for all of them"
            + (f" ({SAFE_TOP}: {SAFE_TOP_EPISODES})" if s.expert_dataset == SAFE_TOP else "")
        )


def describe_length(s: RunSettings, steps: int) -> str:
    if s.online_steps > 0:
        return f"{steps} offline updates + {s.online_steps} online env steps"
    return f"{steps} steps"
