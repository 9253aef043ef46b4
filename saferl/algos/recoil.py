"""ReCOIL: offline imitation from expert + suboptimal data (Dual RL; Sikchi, Zheng, Zhang & Niekum, ICLR 2024).

ReCOIL matches the *mixture* of the expert's and the offline data's visitations instead of the expert's
alone, so it needs neither a discriminator nor the assumption that the offline data covers the expert. It
never reads rewards. Every batch is two halves (the authors' `train_offline_imitate.py`: the same
``--batch_size`` 1024 for both, concatenated in the learner):

    mixed  ~ D_mix = D_S ∪ D_E    the training data with the expert episodes inserted (``D4RLMixedDataset``)
    expert ~ D_E                  the expert episodes only

This file implements the authors' *released* critic (`critic_imitate.py`, `update_q_imitate` with its
``ls_iq_loss`` and `update_v_imitate` with ``rkl_loss_imitate``), not the paper's formal objective
(max_π min_Q β(1−γ)E_ρ0[Q] + E_mix[f*(γ·PV − Q)] − (1−β)E_E[γ·PV − Q], which the code does not use; its
``alpha`` / ``beta`` flags only reach the unused "vanilla" expectile variant). With r = ``lsiq_reward``
(2 by default: the code's constants at γ = 0.99):

    Q_i  ← argmin ½·E_E[(Q_i(s, a) − r/(1−γ))²] + ½·E_mix[(Q_i(s, a) − y)²],  summed over the two critics,
           y = −r + γ·(1 − terminal)·V(s') + γ·terminal·(−r/(1−γ))         ("LSIQ stability trick", below)
    V    ← argmin E_mix[e^{z−m} − z·e^{−m} − e^{−m}],  z = min((min_i Q̄_i(s, a) − V(s))/temp, max_clip),
           m = stopgrad(max(max_batch z, −1))                              (reverse-KL / Gumbel implicit maximiser)
    π    ← argmax E_mix[min(exp(β·(min_i Q̄_i(s, a) − V(s))), 100)·log π(a|s)]   (AWR on the mixed half)

Details carried over from the released code (file by file):

* The Q targets are LSIQ's bounded targets (Al-Hafez et al., "LS-IQ", ICLR 2023), commented
  "LSIQ stability trick!" in `critic_imitate.py`: expert pairs are pinned at Q = 200 = 2/(1−γ), the mixed
  half regresses onto a −2 reward per step, and a terminal transition bootstraps from an absorbing value
  −200 instead of 0. The code hard-codes 200, −2, −200; here they follow ``lsiq_reward`` and γ (identical at
  the defaults).
* The value loss is averaged over the mixed half only; the normaliser m (a stop-gradient rescaling that acts as
  an adaptive learning rate) is the maximum of z over the *whole* concatenated batch, expert half included
  (``max_z = jnp.max(z, axis=0)`` before the ``[: z.shape[0] // 2]`` slice). V's gradient at expert states is
  therefore zero; the expert half only sets the scale.
* V is fitted to the *target* critics' min; the Q target bootstraps from the V just updated (no target V);
  the update order is V → π → Q → Polyak target critics (τ = 0.005), as in the Dual-RL learners.
* The policy update (the learner's ``update_imitate``, read in its descendant `update_gcrl` of the authors'
  SMORe code, the same signature and ``[: B // 2]`` slice) weights the mixed half only. ReCOIL's own
  ``default.py`` (the AWR temperature) was not retrievable; β = 3 is the MuJoCo config of the code base the
  Dual-RL repositories build on (XQL ``offline/configs/mujoco_config.py``: temperature 3.0), with IQL's
  state-independent-σ Gaussian policy and cosine actor learning-rate decay.
* Defaults of `train_offline_imitate.py`: ``--temp`` 1.0, ``--max_clip`` 7, ``--batch_size`` 1024 (each half),
  ``--max_steps`` 1e6, double Q, ``--sample_random_times`` 0, no gradient penalty; Learner: lr 3e-4 for actor,
  critic and value, hidden (256, 256), γ 0.99, τ 0.005.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, ExpertData, optimize
from saferl.algos.fdvl import build_dual_v_networks, reverse_kl_loss
from saferl.algos.iql import awr_weights
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import soft_update


@dataclass
class ReCOILConfig(AlgoConfig):
    batch_size: int = 1024  # the mixed half (train_offline_imitate.py --batch_size)
    expert_batch_size: int = 1024  # the expert half (the same flag)
    steps: int = 1_000_000  # --max_steps
    hidden: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    temp: float = 1.0  # temperature of the value objective (--temp; the README raises it when Q diverges)
    max_clip: float = 7.0  # z = (Q̄ − V)/temp is clipped above at this value (--max_clip)
    lsiq_reward: float = 2.0  # expert Q pinned at r/(1−γ), mixed reward −r, absorbing value −r/(1−γ)
    beta: float = 3.0  # AWR inverse temperature (see the module docstring)
    max_weight: float = 100.0  # AWR weight clip (the Dual-RL actor's jnp.minimum(exp_a, 100))
    value_layer_norm: bool = False  # LayerNorm in V (Learner's layernorm; the README: "sometimes helps")

    def __post_init__(self) -> None:
        for name in ("temp", "lsiq_reward"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"algo.{name}={value!r} is not allowed: it must be a number > 0; e.g. algo.{name}=1")
        if isinstance(self.gamma, int | float) and self.gamma >= 1:
            raise ValueError(
                f"algo.gamma={self.gamma!r} is not allowed for recoil: its Q bounds ±r/(1−γ) need γ < 1; use e.g. "
                "algo.gamma=0.99"
            )


def lsiq_targets(next_v: torch.Tensor, terminals: torch.Tensor, gamma: float, reward: float) -> torch.Tensor:
    """Q targets of the mixed half: −r + γ·(1 − terminal)·V(s') + γ·terminal·(−r/(1−γ)).

    The "LSIQ stability trick" of ReCOIL's `critic_imitate.py` (after LS-IQ, Al-Hafez et al. 2023): a terminal
    state is an absorbing state whose value is the lower bound −r/(1−γ), not 0, so ending an episode never looks
    better than continuing off the expert's support."""
    absorbing = -reward / (1.0 - gamma)
    return -reward + gamma * (1.0 - terminals) * next_v + gamma * terminals * absorbing


def critic_loss(q_mixed: torch.Tensor, target: torch.Tensor, q_expert: torch.Tensor, expert_q: float) -> torch.Tensor:
    """``ls_iq_loss`` summed over the critics: ½·mean((Q_i(s_E, a_E) − expert_q)²) + ½·mean((Q_i(s, a) − y)²)
    per critic i (``q_*`` are ``[E, B]``)."""
    expert = 0.5 * (q_expert - expert_q).pow(2).mean(dim=1)
    mixed = 0.5 * (q_mixed - target.unsqueeze(0)).pow(2).mean(dim=1)
    return (expert + mixed).sum()


def value_loss(x: torch.Tensor, mixed: int, temp: float, max_clip: float) -> torch.Tensor:
    """ReCOIL's value loss (``rkl_loss_imitate``): f-DVL's reverse-KL implicit maximiser of x = Q̄ − V over the whole
    batch (its normaliser m included), averaged over the first ``mixed`` rows (the mixed half) only."""
    return reverse_kl_loss(x, temp, max_clip)[:mixed].mean()


@register("recoil")
class ReCOIL(Algorithm):
    Config = ReCOILConfig
    expert_data = ExpertData.REQUIRED

    def __init__(self, config: ReCOILConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        build_dual_v_networks(self, config, ctx, critics=2)
        self.expert: OfflineDataset | None = None  # set by prepare_imitation; sampled for every batch's second half

    @property
    def expert_q(self) -> float:
        return self.config.lsiq_reward / (1.0 - self.config.gamma)

    def prepare_imitation(self, data: OfflineDataset, expert: OfflineDataset) -> OfflineDataset:
        self.expert = expert
        return super().prepare_imitation(data, expert)  # D_mix: the training data with the expert episodes inserted

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """``batch_size`` transitions of the mixed data followed by ``expert_batch_size`` expert transitions."""
        if self.expert is None:
            raise RuntimeError("recoil samples expert transitions: call prepare_imitation(data, expert) first")
        mixed = data.sample(batch_size, generator)
        expert = self.expert.sample(self.config.expert_batch_size, generator)
        return Batch(*(torch.cat([m, e]) for m, e in zip(mixed[:7], expert[:7], strict=True)))

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        n = batch.observations.shape[0] - cfg.expert_batch_size  # rows of the mixed half
        obs, act = batch.observations, batch.actions

        # 1. V: reverse-KL implicit maximiser of the target critics' min, on the mixed half
        with torch.no_grad():
            target_q = self.q_target(obs, act).amin(0)
        loss_v = value_loss(target_q - self.v(obs), n, cfg.temp, cfg.max_clip)
        optimize(self.optimizers["v"], loss_v)

        # 2. π: advantage-weighted regression on the mixed half, with the V just fitted
        with torch.no_grad():
            v = self.v(obs)
            advantage = target_q[:n] - v[:n]
            weights = awr_weights(advantage, cfg.beta, cfg.max_weight)
        loss_pi = -(weights * self.actor.log_prob(obs[:n], act[:n])).mean()
        optimize(self.optimizers["actor"], loss_pi)
        self.schedulers["actor"].step()

        # 3. Q: expert pairs pinned at r/(1−γ), mixed pairs onto the LSIQ targets (V(s') from the new V)
        with torch.no_grad():
            target = lsiq_targets(self.v(batch.next_observations[:n]), batch.terminals[:n], cfg.gamma, cfg.lsiq_reward)
        qs = self.q(obs, act)
        loss_q = critic_loss(qs[:, :n], target, qs[:, n:], self.expert_q)
        optimize(self.optimizers["q"], loss_q)
        soft_update(self.q_target.parameters(), self.q.parameters(), cfg.tau)
        return {
            "value_loss": loss_v.detach(),
            "q_loss": loss_q.detach(),
            "actor_loss": loss_pi.detach(),
            "advantage": advantage.mean(),
            "awr_weight": weights.mean(),
            "v_mixed": v[:n].mean(),
            "v_expert": v[n:].mean(),
            "q_mixed": qs[:, :n].detach().mean(),
            "q_expert": qs[:, n:].detach().mean(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic)
