"""The one training loop: data, seeding, updates, logging, checkpoints, resume, periodic and final evaluation.

A run directory holds ``config.yaml``, ``metrics.csv`` (+ TensorBoard events under ``tb/`` when tensorboard
is installed), ``checkpoints/last.pt`` and, once finished, ``eval.json``. Files are written atomically
(temporary file + rename), so a killed run never leaves a half-written checkpoint or result; rerunning with
``resume=true`` continues from the last checkpoint with the same random streams, so the resumed run ends
with the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from saferl import evaluation
from saferl.algos import AlgoContext, Algorithm, get_algorithm
from saferl.console import ProgressBar
from saferl.data import DatasetError, OfflineDataset, ensure, load
from saferl.envs import TaskSpec, get_task

log = logging.getLogger("saferl")

EVAL_FILE = "eval.json"
CHECKPOINT = Path("checkpoints") / "last.pt"
OFFLINE_CHECKPOINT = Path("checkpoints") / "offline.pt"  # the policy at the offline→online switch


class SaferlError(RuntimeError):
    """An error with a message meant for the user (the CLI prints it without a traceback)."""


class TrainingDivergedError(SaferlError):
    pass


class RunDirError(SaferlError):
    pass


@dataclass
class RunSettings:
    """The run-level options of the composed Hydra config (see ``conf/config.yaml``)."""

    algo: str
    env: str
    seed: int = 0
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


# ---------------------------------------------------------------------------------------------------
# run directories


def _finished(run_dir: Path) -> bool:
    return (run_dir / EVAL_FILE).is_file()


def resolve_run_dir(s: RunSettings) -> Path:
    """Where this run lives. An explicit ``run_dir`` is used as is; otherwise a new timestamped directory
    under ``runs_root/<env>/<algo>/``, or, with ``resume=true``, the newest unfinished run of the same
    algorithm, task and seed there."""
    if s.run_dir:
        run_dir = Path(s.run_dir)
        if not s.resume and (run_dir / CHECKPOINT).exists():
            state = "a finished run" if _finished(run_dir) else "an unfinished run"
            raise RunDirError(
                f"{run_dir} already holds {state}; pass resume=true to continue it, or choose another run_dir"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    base = Path(s.runs_root) / s.env / s.algo
    prefix = f"seed{s.seed}-"
    if s.resume:
        candidates = sorted(
            (d for d in base.glob(prefix + "*") if (d / CHECKPOINT).exists() and not _finished(d)),
            key=lambda d: d.name,
        )
        if not candidates:
            raise RunDirError(
                f"resume=true but there is no unfinished {s.algo} run on {s.env} with seed {s.seed} under "
                f"{base}; drop resume=true to start a new run, or pass run_dir=<dir> of the run to continue"
            )
        return candidates[-1]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        run_dir = base / (prefix + stamp + (f"-{n}" if n else ""))
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
            return run_dir
        except FileExistsError:
            continue
    raise RunDirError(f"could not create a fresh run directory under {base}")


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _save_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# metrics


class MetricsLog:
    """``metrics.csv`` (one row per log interval) and, when tensorboard is installed, TensorBoard events."""

    EVAL_KEYS = ("eval/reward", "eval/cost", "eval/normalized_reward", "eval/normalized_cost")

    def __init__(self, run_dir: Path, resume_step: int | None, tensorboard: bool):
        self.path = run_dir / "metrics.csv"
        self.header: list[str] | None = None
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
            except ImportError:
                log.debug("tensorboard is not installed; logging to metrics.csv only")

    def _truncate_after(self, step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (and a torn last line)."""
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        self.header, kept = rows[0], [rows[0]]
        for row in rows[1:]:
            if len(row) == len(self.header) and row[0].isdigit() and int(row[0]) <= step:
                kept.append(row)
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows(kept)
        os.replace(tmp, self.path)

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.header is None:
            train_keys = sorted(k for k in values if k not in self.EVAL_KEYS)
            self.header = ["step", *train_keys, *self.EVAL_KEYS]
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.header)
        elif set(values) - set(self.header):  # the online phase logs new columns: widen the file once
            self._widen(sorted(set(values) - set(self.header)))
        row = [step] + [_fmt(values.get(k)) for k in self.header[1:]]
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(row)
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)

    def _widen(self, new_keys: list[str]) -> None:
        assert self.header is not None
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        self.header = [*self.header, *new_keys]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header)
            writer.writerows(row + [""] * len(new_keys) for row in rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# ---------------------------------------------------------------------------------------------------
# the loop


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SaferlError(f"device={name} but torch sees no CUDA device (torch {torch.__version__}); use device=cpu")
    return device


def check_compatible(
    data: OfflineDataset, env: gym.Env, dataset_name: str, task: TaskSpec, allow_env_mismatch: bool = False
) -> None:
    env_id = task.env_id
    obs_shape = env.observation_space.shape
    act_shape = env.action_space.shape
    if not isinstance(env.action_space, gym.spaces.Box) or obs_shape is None or len(obs_shape) != 1:
        raise DatasetError(f"{env_id}: saferl trains on flat Box observation and action spaces")
    if (data.obs_dim,) != obs_shape or (data.act_dim,) != act_shape:
        raise DatasetError(
            f"dataset {dataset_name} does not match env {env_id}: dataset observations have shape "
            f"({data.obs_dim},) and actions ({data.act_dim},), the env expects observations {obs_shape} and "
            f"actions {act_shape}; pick the dataset recorded on this env (dataset=...) or the matching env=..."
        )
    recorded = data.metadata.get("env_id")
    if not task.records_on(recorded) and not allow_env_mismatch:
        # Same shapes, other task: e.g. PointRobot data on BoatRobot trains without complaint and learns the
        # wrong dynamics, hazards and goal.
        raise DatasetError(
            f"dataset {dataset_name} was recorded on {recorded}, not on {env_id} (env={task.name}); train on "
            f"env={task.name}'s own dataset (dataset={task.dataset_id}), pick the env it was recorded on, or "
            "pass allow_env_mismatch=true if you mean to train on another task's data"
        )
    bad = [
        name
        for name in ("observations", "actions", "rewards", "costs")
        if not bool(getattr(data, name).isfinite().all())
    ]
    if bad:
        raise DatasetError(f"dataset {dataset_name} contains NaN or inf in: {', '.join(bad)}")


def _check_finite(
    metrics: dict[str, torch.Tensor], algo: Algorithm, step: int, last_ckpt: int | None, run_dir: Path
) -> dict[str, float]:
    """Read the step's metrics (one host sync) and stop the run if a loss or a parameter is NaN/inf."""
    names = list(metrics)
    flat = torch.stack([metrics[n].detach().float().reshape(()) for n in names]).cpu().tolist() if names else []
    values = dict(zip(names, flat, strict=True))
    bad = [n for n, v in values.items() if not math.isfinite(v)]
    if not bad:
        bad = [f"parameter {n}" for n, p in algo.named_parameters() if not bool(p.isfinite().all())][:1]
    if bad:
        kept = (
            f"the last good checkpoint (step {last_ckpt}) is kept at {run_dir / CHECKPOINT}"
            if last_ckpt is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"training diverged: {', '.join(bad)} became NaN/inf by step {step}; the run stopped and {kept}. "
            "Lower the learning rate or check the dataset, then resume or start again."
        )
    return values


def run_experiment(cfg: Any) -> dict[str, Any]:
    """Train and evaluate one (algorithm, task, seed); returns the ``eval.json`` payload.

    With ``online_steps > 0`` the offline phase is followed by online fine-tuning (`saferl.online`): the
    offline policy is saved to ``checkpoints/offline.pt`` and evaluated (``eval.json["offline"]``), then
    ``online_steps`` env steps of interaction and updates, evaluated every ``online_eval_every`` env steps.
    """
    s, algo_opts = settings_from(cfg)
    task = get_task(s.env)
    algo_cls = get_algorithm(s.algo)
    try:
        algo_cfg = algo_cls.make_config(algo_opts)
    except (TypeError, ValueError) as err:
        raise SaferlError(str(err)) from None
    steps = _offline_steps(s, algo_cfg.steps)
    _check_online_settings(s, algo_cls)
    init_state = _load_init(s.init_from, s.algo) if s.init_from else None
    if init_state is not None:  # the offline phase happened in another run
        steps = int(init_state["step"])
    algo_cfg = dataclasses.replace(algo_cfg, steps=steps)  # schedules see the run's real length
    cost_limit = float(s.cost_limit if s.cost_limit is not None else task.default_cost_limit)
    dataset_name = s.dataset or task.dataset_id
    online_wrap = _online_filter(s.safety_filter, task) if s.online_steps > 0 else None

    if s.resume and s.run_dir and _finished(Path(s.run_dir)):
        result = json.loads((Path(s.run_dir) / EVAL_FILE).read_text())
        log.info("%s is already finished; nothing to do", s.run_dir)
        evaluation.print_eval_table(result, f"{s.algo} on {s.env} (seed {s.seed})")
        return result

    # Check everything the user gave us before a run directory exists.
    device = resolve_device(s.device)
    if s.threads:
        torch.set_num_threads(int(s.threads))
    ensure(dataset_name, progress=s.progress)
    data = load(dataset_name, device=device, download=s.download)
    env = gym.make(task.env_id)
    check_compatible(data, env, dataset_name, task, s.allow_env_mismatch)
    if task.reward_min is None or task.reward_max is None:
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
        task = task.with_reward_range(lo, hi)
    ctx = AlgoContext(
        obs_dim=data.obs_dim,
        act_dim=data.act_dim,
        action_low=env.action_space.low,
        action_high=env.action_space.high,
        cost_limit=cost_limit,
        max_episode_steps=task.max_episode_steps,
        device=device,
        task=task,
    )
    env.close()

    seed_everything(s.seed)
    try:
        algo = algo_cls(algo_cfg, ctx)
        if s.online_steps > 0:
            algo.check_online()
    except ValueError as err:  # an algorithm that cannot run on this task says why
        raise SaferlError(str(err)) from None
    train_data = algo.prepare(data)
    if init_state is not None:
        try:
            algo.load_state_dict(init_state["algo"])
        except (RuntimeError, KeyError) as err:
            raise SaferlError(
                f"init_from={s.init_from}: the checkpoint does not fit {s.algo} with these options ({err}); "
                "use the algorithm and network sizes of the run that wrote it"
            ) from None

    run_dir = resolve_run_dir(s)
    _write_config(run_dir, s, algo_cfg, steps, cost_limit, dataset_name)
    log.info("run directory: %s", run_dir)
    if s.amp not in ("none", "bf16"):
        raise SaferlError(f"amp={s.amp!r} is not supported; use amp=none or amp=bf16")
    update = torch.compile(algo.update) if s.compile else algo.update
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if s.amp == "bf16" else contextlib.nullcontext
    )
    sampler = torch.Generator(device=device)
    sampler.manual_seed(s.seed)

    start_step, elapsed, update_time = (steps if init_state is not None else 0), 0.0, 0.0
    ckpt_path = run_dir / CHECKPOINT
    resumed: dict[str, Any] | None = None
    if s.resume and ckpt_path.exists():
        resumed = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        _check_same_run(resumed, s, steps)
        algo.load_state_dict(resumed["algo"])
        sampler.set_state(resumed["rng"]["sampler"])
        torch.set_rng_state(resumed["rng"]["torch"])
        np.random.set_state(resumed["rng"]["numpy"])
        random.setstate(resumed["rng"]["python"])
        if resumed["rng"].get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resumed["rng"]["cuda"])
        start_step, elapsed, update_time = resumed["step"], resumed["elapsed"], resumed["update_time"]
        log.info("resuming from step %d of %d", start_step, steps)
    online_state = resumed.get("online") if resumed else None
    log_resume = start_step + (online_state["loop"]["env_steps"] if online_state else 0)

    metrics_log = MetricsLog(run_dir, log_resume if s.resume else None, s.tensorboard)
    last_ckpt = start_step if start_step else None
    seg_start = time.perf_counter()
    t_log, steps_since_log = time.perf_counter(), 0
    metrics: dict[str, torch.Tensor] = {}
    # Optional algorithm hook: wrap every evaluation env (e.g. V-OCBF's safety filter around the nominal policy).
    wrap_env = getattr(algo, "wrap_eval_env", None)
    # Sequence models act through per-episode context (CDT: returns-to-go conditioned on the cost limit).
    policy = algo.episodic_policy() if hasattr(algo, "episodic_policy") else algo.act
    bar = ProgressBar(s.progress and steps > start_step, steps, f"{s.algo} on {s.env}", completed=start_step)
    try:
        for step in range(start_step + 1, steps + 1):
            t0 = time.perf_counter()
            with autocast():
                metrics = update(algo.sample(train_data, algo_cfg.batch_size, sampler))
            update_time += time.perf_counter() - t0
            steps_since_log += 1
            if step % 50 == 0 or step == steps:
                bar.advance(50 if step % 50 == 0 else step % 50)
            log_now = step % s.log_every == 0 or step == steps
            eval_now = s.eval_every > 0 and step % s.eval_every == 0 and step != steps
            ckpt_now = step % s.checkpoint_every == 0 or step == steps
            if log_now or eval_now or ckpt_now:
                values = _check_finite(metrics, algo, step, last_ckpt, run_dir)
                now = time.perf_counter()
                values["updates_per_s"] = steps_since_log / max(now - t_log, 1e-9)
                t_log, steps_since_log = now, 0
                if eval_now:
                    algo.eval()  # once per evaluation, not once per act() call
                    stats = evaluation.rollout(task.env_id, policy, s.eval_episodes, s.seed, wrap_env=wrap_env)
                    algo.train()
                    values.update(_eval_values(stats, task, cost_limit))
                if log_now or eval_now:
                    metrics_log.write(step, values)
                    bar.advance(0, status=" ".join(f"{k}={v:.3g}" for k, v in list(values.items())[:2]))
                if ckpt_now:
                    now_elapsed = elapsed + time.perf_counter() - seg_start
                    _save_checkpoint(ckpt_path, algo, sampler, step, now_elapsed, update_time, s, steps)
                    last_ckpt = step
        bar.close()
        elapsed += time.perf_counter() - seg_start
        final_stats, online_info = None, None
        if s.online_steps > 0:
            phase = OnlinePhase(s, algo, task, cost_limit, train_data, run_dir, metrics_log, policy, wrap_env)
            final_stats, online_info, elapsed = phase.run(
                steps, sampler, elapsed, update_time, online_state, online_wrap
            )
    finally:
        bar.close()
        metrics_log.close()

    algo.eval()
    if final_stats is None:
        final_stats = evaluation.rollout(task.env_id, policy, s.eval_episodes, s.seed, wrap_env=wrap_env)
    thresholds = evaluation.eval_thresholds(task, cost_limit)
    result = {
        "algo": s.algo,
        "env": s.env,
        "dataset": data.metadata.get("dataset_id", dataset_name),
        "seed": s.seed,
        "steps": steps,
        "cost_limit": cost_limit,
        **evaluation.dsrl_metrics(final_stats, task, thresholds),
        **evaluation.safety_metrics(final_stats),
        "wall_time_s": elapsed,
        "updates_per_s": steps / update_time if update_time > 0 else float("nan"),
    }
    if online_info is not None:
        result.update(online_info)
    if wrap_env is not None:  # the same policy without the wrapper, for comparison
        plain = evaluation.rollout(task.env_id, policy, s.eval_episodes, s.seed)
        result["unfiltered"] = {**evaluation.dsrl_metrics(plain, task, thresholds), **evaluation.safety_metrics(plain)}
        evaluation.print_eval_table(result["unfiltered"], f"{s.algo} on {s.env} without its evaluation wrapper")
    write_json_atomic(run_dir / EVAL_FILE, result)
    if online_info is not None:
        evaluation.print_eval_table(online_info["offline"], f"{s.algo} on {s.env}: the offline policy")
    evaluation.print_eval_table(result, f"{s.algo} on {s.env} (seed {s.seed}, {_describe_length(s, steps)})")
    log.info("results written to %s", run_dir / EVAL_FILE)
    return result


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[Algorithm, TaskSpec, dict[str, Any], int]:
    """A run directory's trained algorithm, rebuilt from its ``config.yaml`` and ``checkpoints/last.pt`` (in
    eval mode), with its task, its config and the number of updates behind the checkpoint."""
    import yaml

    run_dir = Path(run_dir)
    config_path, checkpoint = run_dir / "config.yaml", run_dir / CHECKPOINT
    if not config_path.is_file() or not checkpoint.is_file():
        raise SaferlError(
            f"{run_dir} has no config.yaml and {CHECKPOINT}; pass a run directory that saferl.run wrote "
            "(it prints it when it starts)"
        )
    cfg = yaml.safe_load(config_path.read_text())
    algo_opts = dict(cfg["algo"])
    algo_cls = get_algorithm(algo_opts.pop("name"))
    task = get_task(cfg["env"]["name"])
    env = gym.make(task.env_id)
    ctx = AlgoContext(
        obs_dim=int(np.prod(env.observation_space.shape)),
        act_dim=int(np.prod(env.action_space.shape)),
        action_low=env.action_space.low,
        action_high=env.action_space.high,
        cost_limit=float(cfg["cost_limit"]),
        max_episode_steps=task.max_episode_steps,
        device=resolve_device(device),
        task=task,
    )
    env.close()
    torch.manual_seed(int(cfg["seed"]))
    algo = algo_cls(algo_cls.make_config(algo_opts), ctx)
    state = _read_checkpoint(checkpoint, str(checkpoint), ctx.device)
    algo.load_state_dict(state["algo"])
    return algo.eval(), task, cfg, int(state["step"])


def _describe_length(s: RunSettings, steps: int) -> str:
    if s.online_steps > 0:
        return f"{steps} offline updates + {s.online_steps} online env steps"
    return f"{steps} steps"


def _offline_steps(s: RunSettings, default: int) -> int:
    """``steps=`` and its offline→online name ``offline_steps=`` (they must agree when both are given)."""
    if s.offline_steps is not None and s.steps is not None and int(s.offline_steps) != int(s.steps):
        raise SaferlError(
            f"steps={s.steps} and offline_steps={s.offline_steps} disagree; they name the same thing, give one"
        )
    value = s.offline_steps if s.offline_steps is not None else s.steps
    return int(value if value is not None else default)


def _check_online_settings(s: RunSettings, algo_cls: type[Algorithm]) -> None:
    if s.online_steps < 0:
        raise SaferlError(f"online_steps must be >= 0, got {s.online_steps}")
    if s.online_steps > 0 and algo_cls.online_mode is None:
        from saferl.algos import REGISTRY

        online = sorted(n for n, c in REGISTRY.items() if c.online_mode is not None)
        raise SaferlError(
            f"algorithm {s.algo!r} has no online phase (online_steps={s.online_steps}); offline→online "
            f"algorithms are {', '.join(online)}"
        )
    if s.online_steps == 0 and (s.init_from or s.safety_filter != "none"):
        raise SaferlError("init_from= and safety_filter= apply to the online phase: also pass online_steps=<env steps>")
    if s.online_envs < 1:
        raise SaferlError(f"online_envs must be >= 1, got {s.online_envs}")


def _read_checkpoint(path: Path, label: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # noqa: BLE001  (torch raises many types for damaged files)
        raise SaferlError(f"{label}: cannot read the checkpoint ({err}); it may be corrupt") from None


def _load_init(path_str: str, algo: str) -> dict[str, Any]:
    """The offline checkpoint that ``init_from`` names (a run directory or a ``.pt`` file)."""
    path = Path(path_str)
    if path.is_dir():
        path = path / OFFLINE_CHECKPOINT if (path / OFFLINE_CHECKPOINT).exists() else path / CHECKPOINT
    if not path.is_file():
        raise SaferlError(
            f"init_from={path_str}: no checkpoint found there; pass a run directory (with "
            f"{OFFLINE_CHECKPOINT} or {CHECKPOINT}) or a .pt checkpoint file"
        )
    state = _read_checkpoint(path, f"init_from={path}")
    if state.get("online") is not None:
        raise SaferlError(f"init_from={path} was written during an online phase; use that run's {OFFLINE_CHECKPOINT}")
    log.info("starting from %s (written by %s after %d updates)", path, state["settings"]["algo"], state["step"])
    return state


def _online_filter(name: str, task: TaskSpec) -> Any:
    """``safety_filter=`` for online interaction: none, or cbf (the task's analytic barrier, `SafetyFilter`)."""
    if name == "none":
        return None
    if name != "cbf":
        raise SaferlError(f"safety_filter={name!r} is not known; use safety_filter=none or safety_filter=cbf")
    from saferl.safety import ControlAffineCBF, SafetyFilter

    try:
        barrier = ControlAffineCBF.for_task(task)
    except ValueError:
        known = ", ".join(t for t in _tasks_with_barrier())
        raise SaferlError(
            f"safety_filter=cbf needs a task with a known barrier and dynamics; {task.name} has none ({known} do)"
        ) from None
    return lambda env: SafetyFilter(env, barrier, on_infeasible="slack")


def _tasks_with_barrier() -> list[str]:
    from saferl.envs import TASKS

    return sorted(name for name, t in TASKS.items() if t.barrier is not None)


class OnlinePhase:
    """The online half of an offline→online run: `OnlineLoop` steps, logging, evaluation and checkpoints
    counted in env steps (``log_every``, ``online_eval_every``, ``checkpoint_every``). A checkpoint falls due
    every ``checkpoint_every`` env steps and is written at the next step where no episode is under way (or
    after one more episode length), so a killed run resumes exactly where it was."""

    def __init__(self, s, algo, task, cost_limit, data, run_dir, metrics_log, policy, wrap_eval):
        self.s, self.algo, self.task, self.cost_limit, self.data = s, algo, task, cost_limit, data
        self.run_dir, self.metrics_log, self.policy, self.wrap_eval = run_dir, metrics_log, policy, wrap_eval

    def _evaluate(self) -> evaluation.RolloutStats:
        self.algo.eval()
        stats = evaluation.rollout(
            self.task.env_id, self.policy, self.s.eval_episodes, self.s.seed, wrap_env=self.wrap_eval
        )
        self.algo.train()
        return stats

    def run(self, steps, sampler, elapsed, update_time, state, wrap_env):
        from saferl.online import OnlineLoop

        s, task = self.s, self.task
        thresholds = evaluation.eval_thresholds(task, self.cost_limit)
        ckpt_path = self.run_dir / CHECKPOINT
        if state is None:  # the switch: keep the offline policy (also as last.pt: init_from runs resume here too)
            for path in (self.run_dir / OFFLINE_CHECKPOINT, ckpt_path):
                _save_checkpoint(path, self.algo, sampler, steps, elapsed, update_time, s, steps)
            stats = self._evaluate()
            offline_result = {**evaluation.dsrl_metrics(stats, task, thresholds), **evaluation.safety_metrics(stats)}
            self.metrics_log.write(steps, {"env_steps": 0.0, **_eval_values(stats, task, self.cost_limit)})
        else:
            offline_result = state["offline_result"]
        loop = OnlineLoop(self.algo, task.env_id, self.data, s.seed, s.online_envs, wrap_env=wrap_env)
        if state is not None:
            loop.load_state_dict(state["loop"])
            log.info("resuming the online phase at env step %d of %d", loop.env_steps, s.online_steps)
        every_eval = s.online_eval_every or max(s.online_steps // 10, 1)
        bar = ProgressBar(s.progress, s.online_steps, f"{s.algo} online", completed=loop.env_steps)
        seg_start, t_log, updates_at_log = time.perf_counter(), time.perf_counter(), loop.updates
        episodes_at_log = len(loop.episode_returns)
        metrics: dict[str, torch.Tensor] = {}
        final_stats, ckpt_due = None, None
        last_ckpt = steps + loop.env_steps  # the switch (offline.pt) or the checkpoint we resumed from
        try:
            while loop.env_steps < s.online_steps:
                before = loop.env_steps
                metrics = loop.step() or metrics
                now = loop.env_steps
                bar.advance(now - before)
                last = now >= s.online_steps

                def crossed(every: int, now: int = now, before: int = before, last: bool = last) -> bool:
                    return last or now // every > before // every

                log_now, eval_now = crossed(s.log_every), crossed(every_eval)
                if crossed(s.checkpoint_every) and ckpt_due is None:
                    ckpt_due = now
                # checkpoints wait for the next episode boundary (exact resume), at most one episode per env
                ckpt_now = ckpt_due is not None and (
                    loop.at_episode_boundary or last or now - ckpt_due >= task.max_episode_steps * s.online_envs
                )
                if not (log_now or eval_now or ckpt_now):
                    continue
                values = _check_finite(metrics, self.algo, steps + now, last_ckpt, self.run_dir) if metrics else {}
                t = time.perf_counter()
                new_returns = loop.episode_returns[episodes_at_log:]
                new_costs = loop.episode_costs[episodes_at_log:]
                values.update(
                    {
                        "env_steps": float(now),
                        "online/updates": float(loop.updates),
                        "online/updates_per_s": (loop.updates - updates_at_log) / max(t - t_log, 1e-9),
                        "online/total_cost": loop.total_cost,
                        "online/interventions": float(loop.interventions),
                    }
                )
                if new_returns:
                    values["online/episode_reward"] = float(np.mean(new_returns))
                    values["online/episode_cost"] = float(np.mean(new_costs))
                t_log, updates_at_log, episodes_at_log = t, loop.updates, len(loop.episode_returns)
                if eval_now:
                    stats = self._evaluate()
                    values.update(_eval_values(stats, task, self.cost_limit))
                    final_stats = stats if last else None
                    bar.advance(0, status=f"reward={values['eval/reward']:.3g} cost={values['eval/cost']:.3g}")
                self.metrics_log.write(steps + now, values)
                if ckpt_now:
                    ckpt_due, last_ckpt = None, steps + now
                    now_elapsed = elapsed + time.perf_counter() - seg_start
                    extra = {"online": {"loop": loop.state_dict(), "offline_result": offline_result}}
                    _save_checkpoint(ckpt_path, self.algo, sampler, steps, now_elapsed, update_time, s, steps, extra)
        finally:
            bar.close()
            loop.close()
        elapsed += time.perf_counter() - seg_start
        info = {
            "offline_steps": steps,
            "online_steps": loop.env_steps,
            "online_updates": loop.updates,
            "online_episodes": len(loop.episode_returns),
            "online_total_cost": loop.total_cost,
            "online_interventions": loop.interventions,
            "offline": offline_result,
        }
        return final_stats, info, elapsed


def _eval_values(stats: evaluation.RolloutStats, task: TaskSpec, cost_limit: float) -> dict[str, float]:
    reward, cost = float(stats.rewards.mean()), float(stats.costs.mean())
    return {
        "eval/reward": reward,
        "eval/cost": cost,
        "eval/normalized_reward": task.normalized_reward(reward),
        "eval/normalized_cost": evaluation.normalized_cost(cost, cost_limit),
    }


def _save_checkpoint(
    path, algo, sampler, step, elapsed, update_time, s: RunSettings, steps: int, extra: dict | None = None
) -> None:
    _save_atomic(
        {
            **(extra or {}),
            "step": step,
            "algo": algo.state_dict(),
            "rng": {
                "sampler": sampler.get_state(),
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "elapsed": elapsed,
            "update_time": update_time,
            "settings": {**asdict(s), "steps": steps},
        },
        path,
    )


def _check_same_run(state: dict[str, Any], s: RunSettings, steps: int) -> None:
    saved = state["settings"]
    for key, now in (("algo", s.algo), ("env", s.env), ("seed", s.seed), ("dataset", s.dataset)):
        if saved.get(key) != now:
            raise RunDirError(
                f"cannot resume: the checkpoint was written by a run with {key}={saved.get(key)!r}, this run has "
                f"{key}={now!r}; resume with the original settings or start a new run"
            )
    if state["step"] > steps:
        raise RunDirError(f"cannot resume: the checkpoint is at step {state['step']}, past steps={steps}")


def _write_config(run_dir: Path, s: RunSettings, algo_cfg: Any, steps: int, cost_limit: float, dataset: str):
    import yaml

    composed = {
        **asdict(s),
        "steps": steps,
        "cost_limit": cost_limit,
        "dataset": dataset,
        "algo": {"name": s.algo, **asdict(algo_cfg)},
        "env": {"name": s.env},
    }
    composed["algo"] = {k: list(v) if isinstance(v, tuple) else v for k, v in composed["algo"].items()}
    path = run_dir / "config.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(composed, sort_keys=False))
    os.replace(tmp, path)
