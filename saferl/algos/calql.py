"""Cal-QL: Calibrated Offline RL Pre-Training for Efficient Online Fine-Tuning (Nakamoto et al., NeurIPS 2023).

CQL (saferl/algos/cql.py) whose regulariser never pushes the learned policy's Q-values below the value of
the data's behaviour policy, estimated by the Monte-Carlo return-to-go G(s) of the transition's episode:

    Q_cur = max(Q_i(s, a ~ π(s)),  G(s))       Q_next = max(Q_i(s, a' ~ π(s')),  G(s))
    R_i   = logsumexp([Q_i(s, a_unif) − log U, Q_next − log π(a'|s'), Q_cur − log π(a|s)]) − Q_i(s, a_data)

so Q stays calibrated (a lower bound on π's value, an upper bound on the behaviour policy's) and online
exploration does not "unlearn" the pretrained policy. Random-action values are not clamped; both policy sets
are evaluated at s (the authors' JaxCQL code). G_t = r_t + γ(1 − d_t)G_{t+1} per episode, no bootstrap at
an episode's end (`nakamotoo/Cal-QL` JaxCQL/replay_buffer.py); online episodes get theirs when they end.

Defaults: the authors' `get_default_config` (JaxCQL/conservative_sac.py): policy lr 1e-4, Q lr 3e-4,
256-256 networks, α_cql 5, 10 CQL actions, importance sampling, max-target backup; online batches half
offline, half online (`mixing_ratio` 0.5 in their scripts), one update per env step.

`sac_ft` is the naive fine-tuning baseline: the same offline phase (so the same offline checkpoint for the
same seed), then plain SAC updates online on the same mixed batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from saferl.algos.cql import CQL, CQLConfig
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset


@dataclass
class CalQLConfig(CQLConfig):
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    cql_alpha: float = 5.0
    max_target_backup: bool = True
    online_offline_ratio: float = 0.5


@register("calql")
class CalQL(CQL):
    Config = CalQLConfig

    @property
    def mc_gamma(self) -> float | None:
        """The online replay buffer computes MC returns of finished episodes with this discount; without the
        regulariser online (``sac_ft``) they are not needed, and transitions enter the buffer as they happen."""
        return self.config.gamma if self.config.online_cql else None

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        data = super().prepare(data)
        self.offline_mc = data.mc_returns(self.config.gamma)
        return data

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        idx = data.sample_indices(batch_size, generator)
        return data.batch(idx)._replace(mc_returns=self.offline_mc[idx])

    def policy_q_floor(self, batch: Batch) -> torch.Tensor | None:
        if batch.mc_returns is None:
            raise ValueError("Cal-QL needs Monte-Carlo returns in every batch (batch.mc_returns is None)")
        return batch.mc_returns * self.config.reward_scale  # rewards enter Q scaled, so do their sums


@dataclass
class SACFinetuneConfig(CalQLConfig):
    online_cql: bool = False


@register("sac_ft")
class SACFinetune(CalQL):
    """Naive SAC fine-tuning from Cal-QL's offline checkpoint (see the module docstring)."""

    Config = SACFinetuneConfig
