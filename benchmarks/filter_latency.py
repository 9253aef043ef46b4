"""Safety-filter latency: µs per QP solve for each solver, and filtered env steps/s on HalfCheetah-v5.

Part 1 — random CBF-QPs  min ‖u − u_nom‖² s.t. A u ≥ b, −1 ≤ u ≤ 1  with n = 6 actions and m = 1, 3 or 5
rows (feasible, and the clipped nominal action violates a row, so that every call is a real solve):
the closed-form projection ("exact": the scalar sweep a single env uses, and the vectorised form over a
batch), DAQP (dense dual active set, exact), OSQP's own API (set up once, update + solve, polished to the
exact solution), cvxpy with DPP parameters compiled once, and cvxpy rebuilt for every solve — the
baseline every ratio is taken against. Target: ≥ 100× faster than rebuilding cvxpy per step at 3 and 5
rows.

Part 2 — HalfCheetah-v5 through `SafetyFilter` with a user-written velocity barrier (v_max − v' ≥
(1 − γ)(v_max − v) under a one-step linear model v' ≈ v + c + wᵀu fitted by least squares on random
actions): steps/s of the bare env, of the filtered env with each solver, of the filter alone on a
zero-cost env (what the wrapper adds per step), and of 8 HalfCheetahs in a SyncVectorEnv behind one
batched filter. The single envs take turns in chunks of steps (as the QP solvers take turns per problem),
so that a load change on the shared machine hits them alike. Target: the filtered env (one row, exact
solver) at ≥ 0.9× the bare env's steps/s; a pass-through wrapper that only converts the action and adds an
info dict is measured too, as the floor any gymnasium wrapper costs.

Usage: python benchmarks/filter_latency.py [--problems 1000] [--seconds 3] [--json out.json] [--out report.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from functools import partial

import gymnasium as gym
import numpy as np

from saferl.safety import (
    CvxpyRebuildSolver,
    CvxpySolver,
    DAQPSolver,
    ExactProjection,
    OSQPSolver,
    SafetyFilter,
)
from saferl.safety.qp import project_halfspace_box_1
from saferl.safety.velocity import VelocityBarrier, fit_velocity_model


def random_problems(rng: np.random.Generator, count: int, m: int, n: int = 6):
    """Feasible problems whose clipped nominal action violates at least one row: every one is a real solve
    (a filter returns the clipped nominal action without solving when it is already safe)."""
    out_u, out_A, out_b = [], [], []
    while len(out_u) < count:
        u_nom = rng.uniform(-1.5, 1.5, n)
        A = rng.normal(size=(m, n))
        b = A @ rng.uniform(-1, 1, n) - rng.uniform(0, 1, m) * np.abs(A).sum(-1) * (rng.random(m) < 0.5)
        if np.any(A @ np.clip(u_nom, -1, 1) < b):
            out_u.append(u_nom), out_A.append(A), out_b.append(b)
    return np.array(out_u), np.array(out_A), np.array(out_b)


def time_interleaved(calls: dict, inputs: dict, limit_s: float) -> dict[str, np.ndarray]:
    """Per-solve wall times (µs), one problem at a time as a single env calls it. The solvers take turns on
    each problem, so that a load change on the shared machine hits all of them alike."""
    count = len(next(iter(inputs.values()))[0])
    for name, call in calls.items():  # set-up / compilation is paid once, outside the timing
        call(*(p[0] for p in inputs[name]))
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    for i in range(count):
        for name, call in calls.items():
            args = tuple(p[i] for p in inputs[name])
            t0 = time.perf_counter()
            call(*args)
            times[name].append((time.perf_counter() - t0) * 1e6)
        if time.perf_counter() - start > limit_s:
            break
    return {name: np.array(t) for name, t in times.items()}


def _solve(solver, u_nom, A, b):
    return solver.solve(u_nom, A, b, -1.0, 1.0)


_LO, _HI = -np.ones(6), np.ones(6)


def _solve_one(solver, u_nom, A, b):
    return solver.solve_one(u_nom, A, b, _LO, _HI)


def _scalar(lo, hi, u_nom, a, b):
    return project_halfspace_box_1(u_nom, a, b, lo, hi)


CONSTRAINTS = (1, 3, 5)


def qp_table(problems_per_m: int, limit_s: float) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for m in CONSTRAINTS:
        problems = random_problems(rng, problems_per_m, m)
        solvers = {
            "cvxpy rebuilt per solve (Clarabel)": CvxpyRebuildSolver(),
            "DAQP (dense active set, exact)": DAQPSolver(),
            "cvxpy DPP, compiled once (Clarabel)": CvxpySolver(),
            "cvxpy DPP, compiled once (OSQP)": CvxpySolver("OSQP"),
            "OSQP own API, polished (exact)": OSQPSolver(),
            "OSQP own API, no refinement (eps 1e-7)": OSQPSolver(refine=False),
        }
        if m == 1:
            solvers["exact projection, ExactProjection.solve (numpy in/out)"] = ExactProjection()
        calls = {name: partial(_solve, solver) for name, solver in solvers.items()}
        inputs = dict.fromkeys(calls, problems)
        daqp_one = "DAQP, DAQPSolver.solve_one (the single-env filter path for several rows)"
        calls[daqp_one] = partial(_solve_one, solvers["DAQP (dense active set, exact)"])
        inputs[daqp_one] = problems
        if m == 1:
            scalar = "exact projection, scalar sweep (the single-env filter path)"
            calls[scalar] = partial(_scalar, [-1.0] * 6, [1.0] * 6)
            inputs[scalar] = (problems[0].tolist(), problems[1][:, 0].tolist(), problems[2][:, 0].tolist())
        results = time_interleaved(calls, inputs, limit_s)
        base = np.median(results["cvxpy rebuilt per solve (Clarabel)"])
        for name, times in results.items():
            med = float(np.median(times))
            rows.append(
                dict(
                    m=m,
                    solver=name,
                    median_us=med,
                    mean_us=float(times.mean()),
                    solves=len(times),
                    vs_rebuild=base / med,
                )
            )
        if m == 1:  # a vector env: one vectorised projection for the whole batch
            u_nom, A, b = problems
            exact = ExactProjection()
            exact.solve(u_nom, A, b, -1.0, 1.0)
            t0, reps = time.perf_counter(), 20
            for _ in range(reps):
                exact.solve(u_nom, A, b, -1.0, 1.0)
            per = (time.perf_counter() - t0) / (reps * len(u_nom)) * 1e6
            name = f"exact projection, vectorised over a batch of {len(u_nom)}"
            rows.append(
                dict(m=m, solver=name, median_us=per, mean_us=per, solves=reps * len(u_nom), vs_rebuild=base / per)
            )
    return rows


# ---------------------------------------------------------------------------------------------------
# HalfCheetah


class NullCheetah(gym.Env):
    """HalfCheetah's spaces with a free step: what the filter alone costs per step."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (17,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)

    def __init__(self) -> None:
        self._obs = np.zeros(17)
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs, {}

    def step(self, action):
        self._t += 1
        self._obs[8] = 3.0 * np.sin(0.05 * self._t)  # sweeps through the barrier's active region
        return self._obs, 0.0, False, False, {}


class PassThrough(gym.Wrapper):
    """A wrapper that does what any action wrapper must (convert the action, add an info entry) and no more."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.array(action.tolist()).astype(np.float32))
        info = dict(info)
        info["pass_through"] = {"status": "optimal", "correction_norm": 0.0, "intervened": False}
        return obs, reward, terminated, truncated, info


def interleaved_steps_per_second(envs: dict, seconds: float, actions: np.ndarray, chunk: int = 250) -> dict:
    """Steps/s of each env; the envs take turns, ``chunk`` steps each, until each has had ``seconds``."""
    steps = dict.fromkeys(envs, 0)
    spent = dict.fromkeys(envs, 0.0)
    for env in envs.values():
        env.reset(seed=0)
    while min(spent.values()) < seconds:
        for name, env in envs.items():
            if spent[name] >= seconds:
                continue
            k, start = steps[name], time.perf_counter()
            for i in range(k, k + chunk):
                _, _, terminated, truncated, _ = env.step(actions[i % len(actions)])
                if terminated or truncated:
                    env.reset()
            spent[name] += time.perf_counter() - start
            steps[name] = k + chunk
    return {name: steps[name] / spent[name] for name in envs}


def vector_steps_per_second(venv, seconds: float, actions: np.ndarray) -> float:
    venv.reset(seed=0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        venv.step(np.broadcast_to(actions[steps % len(actions)], (venv.num_envs, actions.shape[1])))
        steps += 1
    return steps * venv.num_envs / (time.perf_counter() - start)


def cheetah_table(seconds: float) -> list[dict]:
    w, c = fit_velocity_model(gym.make("HalfCheetah-v5"), 3000, np.random.default_rng(0))
    # an open-loop gait and a speed limit it reaches, so that the filter intervenes part of the time
    barrier = VelocityBarrier(v_max=0.5, w=w, c=c)
    t = np.arange(2048)[:, None]
    actions = np.clip(1.5 * np.sin(0.8 * t + np.arange(6)), -1, 1).astype(np.float32)
    envs = {
        "HalfCheetah-v5, no filter": gym.make("HalfCheetah-v5"),
        "HalfCheetah-v5 + pass-through wrapper (the floor)": PassThrough(gym.make("HalfCheetah-v5")),
    }
    for solver in ("exact", "osqp", "cvxpy"):
        envs[f"HalfCheetah-v5 + SafetyFilter(solver={solver!r})"] = SafetyFilter(
            gym.make("HalfCheetah-v5"), barrier, solver=solver
        )
    envs["filter alone (zero-cost env), exact"] = SafetyFilter(NullCheetah(), barrier)
    sps = interleaved_steps_per_second(envs, seconds, actions)
    bare = sps["HalfCheetah-v5, no filter"]
    rows = []
    for name, env in envs.items():
        rate = env.total_interventions / max(env.total_steps, 1) if isinstance(env, SafetyFilter) else None
        rows.append(dict(setup=name, steps_per_s=sps[name], interventions=rate))
    venv = SafetyFilter(gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v5")] * 8), barrier)
    rows.append(
        dict(
            setup="8 × HalfCheetah-v5 (SyncVectorEnv) + one batched filter",
            steps_per_s=vector_steps_per_second(venv, seconds / 2, actions),
            interventions=None,
        )
    )
    bare_vec = gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v5")] * 8)
    rows.append(
        dict(
            setup="8 × HalfCheetah-v5 (SyncVectorEnv), no filter",
            steps_per_s=vector_steps_per_second(bare_vec, seconds / 2, actions),
            interventions=None,
        )
    )
    for row in rows:
        row["vs_bare"] = row["steps_per_s"] / bare
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=1000, help="random QPs per constraint count")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per env measurement (QPs: 8× this)")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args()

    lines = [
        "# Safety-filter latency",
        "",
        f"`python benchmarks/filter_latency.py --problems {args.problems} --seconds {args.seconds}`, "
        f"{dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at the start (the cores are "
        "shared; numpy's per-call overhead, and so every µs figure, grows with it); every row measured in the "
        "same run.",
        "",
    ]

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    qp = qp_table(args.problems, 8 * args.seconds)
    emit("| constraints | solver | median µs/solve | mean µs/solve | solves | speed-up vs cvxpy rebuilt |")
    emit("|---|---|---|---|---|---|")
    for r in qp:
        cells = [r["m"], r["solver"], f"{r['median_us']:,.1f}", f"{r['mean_us']:,.1f}", r["solves"]]
        emit("| " + " | ".join(map(str, cells)) + f" | {r['vs_rebuild']:,.0f}× |")
    # "best" is over the exact single-problem rows (not the batched row, not unrefined OSQP)
    best = {
        m: max(
            r["vs_rebuild"] for r in qp if r["m"] == m and not any(k in r["solver"] for k in ("vectorised", "no ref"))
        )
        for m in CONSTRAINTS
    }
    emit()
    met = "met" if min(best[3], best[5]) >= 100 else "missed"
    emit(
        "Fastest exact single-problem solver vs cvxpy rebuilt: "
        + ", ".join(f"m={m} {best[m]:,.0f}×" for m in CONSTRAINTS)
        + f" (target ≥ 100× at m=3 and m=5: {met})."
    )
    emit()

    cheetah = cheetah_table(args.seconds)
    emit("| setup | steps/s | vs bare env | intervention rate |")
    emit("|---|---|---|---|")
    for r in cheetah:
        rate = "" if r["interventions"] is None else f"{r['interventions']:.1%}"
        emit(f"| {r['setup']} | {r['steps_per_s']:,.0f} | {r['vs_bare']:.2f}× | {rate} |")
    filtered = next(r for r in cheetah if "solver='exact'" in r["setup"])
    floor = next(r for r in cheetah if "pass-through" in r["setup"])
    emit()
    emit(
        f"Filtered HalfCheetah (exact solver): {filtered['steps_per_s']:,.0f} steps/s, "
        f"{filtered['vs_bare']:.2f}× the bare env (target ≥ 0.9×: "
        f"{'met' if filtered['vs_bare'] >= 0.9 else 'missed'}); a pass-through wrapper: {floor['vs_bare']:.2f}×."
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"qp": qp, "halfcheetah": cheetah}, fh, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
