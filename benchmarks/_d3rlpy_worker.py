"""d3rlpy side of benchmarks/throughput.py; runs inside d3rlpy's own virtualenv (its gymnasium==1.0.0 pin
conflicts with saferl's stack). Prints one JSON line: updates/s with and without d3rlpy's batch sampler."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def main() -> None:
    algo_name, seconds, threads, batch_size = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    import d3rlpy
    from d3rlpy.algos import CQLConfig, IQLConfig, SACConfig, TD3PlusBCConfig
    from d3rlpy.models.encoders import VectorEncoderFactory

    rng = np.random.default_rng(0)
    n, obs_dim, act_dim = 100_000, 17, 6
    timeouts = np.zeros(n, dtype=np.float32)
    timeouts[999::1000] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(
        observations=rng.standard_normal((n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        terminals=np.zeros(n, dtype=np.float32),
        timeouts=timeouts,
    )
    enc = VectorEncoderFactory(hidden_units=[256, 256])
    common = {"batch_size": batch_size, "actor_encoder_factory": enc, "critic_encoder_factory": enc}
    configs = {
        "iql": lambda: IQLConfig(**common, value_encoder_factory=enc),
        "td3bc": lambda: TD3PlusBCConfig(**common),
        "cql": lambda: CQLConfig(**common),
        "sac10": lambda: SACConfig(**common, n_critics=10),  # SAC-N, d3rlpy's nearest peer of EDAC
    }
    algo = configs[algo_name]().create(device="cpu:0")
    algo.build_with_dataset(dataset)
    buffer = dataset  # MDPDataset is a ReplayBuffer

    def timed(with_sampling: bool) -> float:
        batches = [buffer.sample_transition_batch(batch_size) for _ in range(8)]
        for b in batches[:3]:
            algo.update(b)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            batch = buffer.sample_transition_batch(batch_size) if with_sampling else batches[count % 8]
            algo.update(batch)
            count += 1
        return count / (time.perf_counter() - start)

    print(json.dumps({"update_only": timed(False), "with_sampling": timed(True)}))


if __name__ == "__main__":
    main()
