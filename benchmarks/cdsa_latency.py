"""CDSA's acting latency per env step, next to its base policy's, measured in the same run.

CDSA acts as base policy + adjustment: one base forward, one forward-model pass, ``len(guide_sigmas)`` score
passes and two inverse-model passes (`saferl.algos.cdsa.CDSA.adjust`). This script times ``act(obs)`` (numpy
in, numpy out, as evaluation and `saferl.load_policy` call it) for the base alone and for CDSA on top of it,
at batch 1 (one env) and batched (``--batch``, envs in lock-step), for PointRobot's shapes (2-D observations
and actions) and a MuJoCo-sized task (HalfCheetah: 17-D observations, 6-D actions). Networks are untrained:
latency does not depend on the weights. The two policies take turns in chunks of calls, so that a load
change on a shared machine hits both alike; the ratio CDSA / base is the number to read.

Usage: python benchmarks/cdsa_latency.py [--seconds 2] [--batch 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from saferl.algos import AlgoContext, get_algorithm
from saferl.algos.cdsa import CDSA


def context(obs_dim: int, act_dim: int) -> AlgoContext:
    return AlgoContext(
        obs_dim=obs_dim,
        act_dim=act_dim,
        action_low=np.full(act_dim, -1.0, np.float32),
        action_high=np.full(act_dim, 1.0, np.float32),
        cost_limit=10.0,
        max_episode_steps=1000,
        device=torch.device("cpu"),
    )


def per_call_us(policies: dict[str, object], obs: np.ndarray, seconds: float, chunk: int = 50) -> dict[str, float]:
    """Median over chunks of the µs per ``act`` call, the policies taking turns chunk by chunk."""
    times: dict[str, list[float]] = {name: [] for name in policies}
    for policy in policies.values():  # warm-up
        for _ in range(20):
            policy.act(obs)
    end = time.perf_counter() + seconds * len(policies)
    while time.perf_counter() < end:
        for name, policy in policies.items():
            t0 = time.perf_counter()
            for _ in range(chunk):
                policy.act(obs)
            times[name].append((time.perf_counter() - t0) / chunk * 1e6)
    return {name: float(np.median(v)) for name, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per policy and setting")
    parser.add_argument("--batch", type=int, default=32, help="observations per call in the batched setting")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s); µs per act() call (median over chunks)\n")
    print(f"{'task shapes':<22}{'base':<8}{'cdsa nets':<11}{'batch':>6}{'base µs':>10}{'cdsa µs':>10}{'ratio':>8}")
    for task, (o, a) in {"PointRobot (2, 2)": (2, 2), "HalfCheetah (17, 6)": (17, 6)}.items():
        ctx = context(o, a)
        for base_name, cdsa_hidden in (("td3bc", (256, 256)), ("td3bc", (128, 128)), ("iql", (256, 256))):
            base_cls = get_algorithm(base_name)
            base = base_cls(base_cls.Config(), ctx).eval()
            cfg = CDSA.Config(score_hidden=cdsa_hidden, dynamics_hidden=cdsa_hidden)
            cdsa = CDSA(cfg, ctx, base=base).eval()
            for batch in (1, args.batch):
                obs = rng.normal(size=(batch, o)).astype(np.float32)
                us = per_call_us({"base": base, "cdsa": cdsa}, obs, args.seconds)
                ratio = us["cdsa"] / us["base"]
                nets = f"{cdsa_hidden[0]}x{len(cdsa_hidden)}"
                print(
                    f"{task:<22}{base_name:<8}{nets:<11}{batch:>6}{us['base']:>10.1f}{us['cdsa']:>10.1f}{ratio:>7.2f}x"
                )


if __name__ == "__main__":
    main()
