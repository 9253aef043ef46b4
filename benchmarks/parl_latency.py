"""PA-RL's acting latency per env step, next to FISOR's DDPM actor, measured in the same run.

PA-RL acts through its action optimisation: N base-policy samples, one critic pass to re-rank them, T gradient
steps on the k kept ones (one critic forward + backward w.r.t. the actions each) and a last critic pass, then the
argmax (`saferl.algos.parl.PARL.policy`). FISOR samples N = 16 candidates from its DDPM actor and evaluates its
feasibility critic once. This script times ``act(obs)`` (numpy in, numpy out, as evaluation calls it) at batch 1
(one env) and batched (``--batch`` envs in lock-step) on PointRobot's shapes, for:

* ``fisor_cpu`` (the reference: FISOR's CPU preset) and ``fisor`` (its paper size);
* PA-RL at its CPU preset (conf/algo_preset/cpu_parl.yaml: N = 8, k = 4, T = 5) for each policy class, its base
  policy alone (``act_base``: one sample, no optimisation), and PA-RL at the authors' sizes (N = 32, k = 10,
  T = 10, 10 critics, a 256 × 3 DDPM);
* ``parl_safe`` at its CPU preset (a second critic in every optimisation step).

Networks are untrained (latency does not depend on the weights). The policies take turns in chunks of calls, so a
load change on a shared machine hits all alike; the ratio to ``fisor_cpu`` is the number to read.

Usage: python benchmarks/parl_latency.py [--seconds 2] [--batch 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from saferl.algos import AlgoContext, get_algorithm

PRESETS = Path(__file__).resolve().parents[1] / "saferl" / "conf" / "algo_preset"


def context() -> AlgoContext:
    return AlgoContext(
        obs_dim=2,
        act_dim=2,
        action_low=np.full(2, -1.0, np.float32),
        action_high=np.full(2, 1.0, np.float32),
        cost_limit=10.0,
        max_episode_steps=200,
        device=torch.device("cpu"),
    )


def build(name: str, preset: str | None = None, **overrides):
    opts = dict(OmegaConf.to_container(OmegaConf.load(PRESETS / f"{preset}.yaml"))) if preset else {}
    cls = get_algorithm(name)
    algo = cls(cls.make_config({**opts, **overrides}), context())
    algo.eval()
    return algo


def per_call_ms(policies: dict[str, object], obs: np.ndarray, seconds: float, chunk: int = 10) -> dict[str, float]:
    """Median over chunks of the ms per call, the policies taking turns chunk by chunk."""
    times: dict[str, list[float]] = {name: [] for name in policies}
    for fn in policies.values():  # warm-up
        for _ in range(3):
            fn(obs)
    deadline = time.perf_counter() + seconds * len(policies)
    while time.perf_counter() < deadline or min(len(t) for t in times.values()) < 3:
        for name, fn in policies.items():
            t0 = time.perf_counter()
            for _ in range(chunk):
                fn(obs)
            times[name].append((time.perf_counter() - t0) / chunk * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per policy and batch size")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    parl_cpu = {cls: build("parl", "cpu_parl", policy_class=cls) for cls in ("diffusion", "gaussian", "deterministic")}
    policies = {
        "fisor_cpu (N=16 DDPM + Q_h)": build("fisor_cpu").act,
        "fisor (paper size)": build("fisor").act,
        "parl cpu, diffusion": parl_cpu["diffusion"].act,
        "  its base policy alone": parl_cpu["diffusion"].act_base,
        "parl cpu, gaussian": parl_cpu["gaussian"].act,
        "parl cpu, deterministic": parl_cpu["deterministic"].act,
        "parl_safe cpu, diffusion": build("parl_safe", "cpu_parl_safe").act,
        "parl (paper size)": build("parl").act,
    }
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"threads={args.threads}, load average before: {load}")
    rng = np.random.default_rng(0)
    for batch in (1, args.batch):
        obs = rng.uniform(-2.5, 2.5, size=(batch, 2)).astype(np.float32)
        ms = per_call_ms(policies, obs, args.seconds)
        ref = ms["fisor_cpu (N=16 DDPM + Q_h)"]
        print(f"\nbatch {batch}: ms per act call (per env step: / {batch}), ratio to fisor_cpu")
        for name, value in ms.items():
            print(f"  {name:30s} {value:9.2f} ms  {value / batch:8.3f} ms/env-step  × {value / ref:6.2f}")
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
