"""The run-level options of a composed Hydra config, and the checks on them that need no data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saferl.algos import AlgoConfig, Algorithm
from saferl.algos.registry import no_online_phase_message
from saferl.runs.errors import SaferlError

AMP_MODES = ("none", "bf16")


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
    if s.offline_steps is not None and s.steps is not None and int(s.offline_steps) != int(s.steps):
        raise SaferlError(
            f"steps={s.steps} and offline_steps={s.offline_steps} disagree; they name the same thing, give one"
        )
    value = s.offline_steps if s.offline_steps is not None else s.steps
    return int(value if value is not None else default)


def check_settings(s: RunSettings, algo_cls: type[Algorithm]) -> None:
    """The options that must make sense together before anything is loaded or written."""
    if s.online_steps < 0:
        raise SaferlError(f"online_steps must be >= 0, got {s.online_steps}")
    if s.online_steps > 0 and algo_cls.online_mode is None:
        raise SaferlError(f"{no_online_phase_message(s.algo)} (online_steps={s.online_steps})")
    if s.online_steps == 0 and (s.init_from or s.safety_filter != "none"):
        raise SaferlError("init_from= and safety_filter= apply to the online phase: also pass online_steps=<env steps>")
    if s.online_envs < 1:
        raise SaferlError(f"online_envs must be >= 1, got {s.online_envs}")
    if s.amp not in AMP_MODES:
        raise SaferlError(f"amp={s.amp!r} is not supported; use amp=none or amp=bf16")


def describe_length(s: RunSettings, steps: int) -> str:
    if s.online_steps > 0:
        return f"{steps} offline updates + {s.online_steps} online env steps"
    return f"{steps} steps"
