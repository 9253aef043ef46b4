"""OSRL side of benchmarks/throughput.py; runs inside OSRL's own virtualenv (osrl-lib 0.1.0 needs numpy<2 and
gymnasium 0.29). Prints one JSON line: OSRL's `train_one_step` per second on pre-sampled batches (its data
loader is left out, which can only favour OSRL).

Sizes are OSRL's example configs (bcql_configs / cpq_configs / cdt_configs), which saferl's defaults copy:
BCQ-L 256-256 actor and critics, VAE 400, batch 512; CPQ actor 300-300, critics 400-400, VAE 400, batch 512;
CDT 3 layers × 8 heads × 128, context 10, batch 2048. Both critics of each pair are counted as saferl counts
them: BCQ-L's num_q = num_qc = 1 (one double-Q pair each), CPQ's num_q = num_qc = 2.
"""

from __future__ import annotations

import json
import sys
import time
import types

import torch

OBS, ACT, EPISODE_LEN = 17, 6, 1000  # as the saferl side of throughput.py


def build(algo: str, batch: int):
    sys.modules.setdefault("wandb", types.ModuleType("wandb"))  # fsrl's logger imports it; nothing is logged
    from osrl.algorithms import BCQL, CDT, CPQ, BCQLTrainer, CDTTrainer, CPQTrainer

    g = torch.Generator().manual_seed(0)
    if algo == "cdt":
        model = CDT(
            OBS,
            ACT,
            1.0,
            seq_len=10,
            episode_len=EPISODE_LEN,
            embedding_dim=128,
            num_layers=3,
            num_heads=8,
            attention_dropout=0.1,
            residual_dropout=0.1,
            embedding_dropout=0.1,
            time_emb=True,
            use_rew=True,
            use_cost=True,
            cost_transform=True,
            action_head_layers=1,
            stochastic=True,
            init_temperature=0.1,
            target_entropy=-ACT,
        )
        trainer = CDTTrainer(
            model,
            None,
            learning_rate=1e-4,
            weight_decay=1e-4,
            clip_grad=0.25,
            lr_warmup_steps=500,
            reward_scale=0.1,
            cost_scale=1.0,
            loss_cost_weight=0.02,
        )
        seq = 10

        def make_batch():
            return [
                torch.randn(batch, seq, OBS, generator=g),
                torch.rand(batch, seq, ACT, generator=g) * 1.8 - 0.9,  # inside the squashed range
                torch.rand(batch, seq, generator=g) * 30,
                torch.rand(batch, seq, generator=g) * 50,
                torch.randint(0, EPISODE_LEN - seq, (batch, 1), generator=g) + torch.arange(seq),
                torch.ones(batch, seq),
                torch.rand(batch, generator=g) * 50,
                (torch.rand(batch, seq, generator=g) < 0.1).float(),
            ]
    else:
        # (model class, its sizes, trainer class, its learning rates): OSRL's example configs
        common = {"vae_hidden_sizes": 400, "sample_action_num": 10, "episode_len": EPISODE_LEN}
        model_cls, sizes, trainer_cls, rates = {
            "bcq_lag": (BCQL, {"a_hidden_sizes": [256, 256], "c_hidden_sizes": [256, 256], "num_q": 1, "num_qc": 1},
                        BCQLTrainer, {"actor_lr": 1e-3, "critic_lr": 1e-3, "vae_lr": 1e-3}),
            "cpq": (CPQ, {"a_hidden_sizes": [300, 300], "c_hidden_sizes": [400, 400], "num_q": 2, "num_qc": 2,
                          "beta": 0.5},
                    CPQTrainer, {"actor_lr": 1e-4, "critic_lr": 1e-3, "alpha_lr": 1e-3, "vae_lr": 1e-3}),
        }[algo]  # fmt: skip
        model = model_cls(OBS, ACT, 1.0, **common, **sizes)
        trainer = trainer_cls(model, None, reward_scale=0.1, **rates)

        def make_batch():
            return [
                torch.randn(batch, OBS, generator=g),
                torch.randn(batch, OBS, generator=g),
                torch.rand(batch, ACT, generator=g) * 2 - 1,
                torch.randn(batch, generator=g),
                (torch.rand(batch, generator=g) < 0.1).float(),
                torch.zeros(batch),
            ]

    return trainer, [make_batch() for _ in range(4)]


def main() -> None:
    algo, seconds, threads, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    trainer, batches = build(algo, batch)
    for b in batches[:2]:
        trainer.train_one_step(*b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        trainer.train_one_step(*batches[count % len(batches)])
        count += 1
    print(json.dumps({"update_only": count / (time.perf_counter() - start)}))


if __name__ == "__main__":
    main()
