"""Behaviour cloning, OSRL semantics (Liu et al., "Datasets and Benchmarks for Offline Safe RL", 2023).

BC-All imitates every transition; BC-Safe imitates only episodes whose undiscounted cost return is at
most the cost limit (OSRL `process_bc_dataset`, mode "safe": ``cost_return <= cost_limit``).

Imitation reference points (``expert_dataset=``, see `saferl.runs.resolve.resolve_expert`): BC-Expert imitates
the expert episodes alone (the usual baseline of offline imitation from expert + suboptimal data, e.g. ReCOIL,
Sikchi et al. 2024); BC-All given expert episodes imitates the training data ∪ the expert episodes.
Deterministic MLP actor with a tanh head, mean-squared error to the dataset action; defaults from OSRL's
BC config (256-256 ReLU, Adam 1e-3, batch 512).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, ExpertData, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, DatasetError, OfflineDataset
from saferl.nn import DeterministicActor


@dataclass
class BCConfig(AlgoConfig):
    batch_size: int = 512
    steps: int = 5_000
    hidden: tuple[int, ...] = (256, 256)
    lr: float = 1e-3


class _BehaviourCloning(Algorithm):
    Config = BCConfig
    safe_only: bool = False

    def __init__(self, config: BCConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        self.actor = DeterministicActor(ctx.obs_dim, ctx.act_dim, ctx.action_low, ctx.action_high, config.hidden).to(
            ctx.device
        )
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.lr)

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        if not self.safe_only:
            return data
        keep = data.episode_costs <= self.ctx.cost_limit
        if not bool(keep.any()):
            raise DatasetError(
                f"BC-Safe: no episode has a cost return <= cost_limit={self.ctx.cost_limit} "
                f"(lowest is {float(data.episode_costs.min()):g}); raise cost_limit or use bc_all"
            )
        return data.select_episodes(keep)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss = F.mse_loss(self.actor(batch.observations), batch.actions)
        optimize(self.optimizers["actor"], loss)
        return {"actor_loss": loss.detach()}

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs)


@register("bc_all")
class BCAll(_BehaviourCloning):
    safe_only = False
    expert_data = ExpertData.OPTIONAL  # with expert episodes: the data ∪ them (the default prepare_imitation)


@register("bc_safe")
class BCSafe(_BehaviourCloning):
    safe_only = True


@register("bc_expert")
class BCExpert(_BehaviourCloning):
    expert_data = ExpertData.REQUIRED

    def prepare_imitation(self, data: OfflineDataset, expert: OfflineDataset) -> OfflineDataset:
        return expert
