"""RO2O (Wen et al., "Towards Robust Offline-to-Online RL via Uncertainty and Smoothness", JAIR, arXiv 2309.16973).

Defaults and losses from the authors' code (`BattleWen/RO2O`, ``algorithms/offline/ro2o_mujoco.py`` offline,
``algorithms/finetune/ro2o_ft_mujoco.py`` online). SAC with an N-critic ensemble and a min-target (SAC-N:
`RO2O` extends `saferl.algos.sac_n.SACN` and reuses its steps), plus three regularisers built from uniformly
perturbed states ŝ_j = s + δ_j, δ_j ~ U[−ε, ε]^{|S|} (j = 1..n, one set of n offsets shared by the whole
batch, a fresh set per regulariser and update; the perturbation is applied to the *normalised* state, as the
authors normalise the dataset first):

    y        = r + γ(1 − d)·(min_i Q̄_i(s', a') − α·log π(a'|s')),   a' ~ π(s')
    L_TD     = Σ_i E_b[(Q_i(s, a) − y)²]
    Δ_ij     = Q_i(ŝ_j, a) − Q_i(s, a)                                   (value smoothness, ε_Q)
    L_smooth = η₁ · E_b max_j mean_i[(1 − τ_s)·max(Δ_ij, 0)² + τ_s·min(Δ_ij, 0)²]
    L_ood    = β_ood · mean_{i,b,j}(Q_i(ŝ_j, â_j) − sg[Q_i(ŝ_j, â_j) − α_u·std_k Q_k(ŝ_j, â_j)])²,  â_j ~ π(ŝ_j)
    L_Q      = L_TD + L_smooth + L_ood
    L_π      = E_b[α·log π(a|s) − min_i Q_i(s, a)]
               + β_policy · E_b max_j [KL(N_s ‖ N_ŝj) + KL(N_ŝj ‖ N_s)]      (policy smoothness, ε_P;
                                                                         N = the pre-tanh Gaussian)
    α tuned towards entropy −|A|;  update order α → actor → critic → target (EDAC/CORL order)

τ_s = 0.2 < 0.5 penalises a Q *increase* under perturbation four times more than a decrease; the OOD term
pulls Q down by α_u·(ensemble std) on perturbed states, with α_u decaying linearly from
`q_ood_uncertainty_reg` to `q_ood_uncertainty_reg_min` (one decay step per update).

Online phase (``online_update``): the authors' README runs fine-tuning with α_u fixed at its minimum (decay 0);
`start_online` sets it there. Fine-tuning uses a fresh online-only FIFO buffer of 250k transitions, 2,500
env steps collected with the pretrained (stochastic) policy before the first update, then one update per env
step. The paper keeps the same objective online (the default); `online_regularizers=false` gives the variant
of one stored version of the authors' fine-tuning script (commit 26ad528), where the online losses are plain
SAC-N (L_TD and the SAC actor loss only).

The paper trains 2.5M offline steps (2500 epochs × 1000); ``steps`` defaults to 100k like the other
algorithms here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from saferl.algos.base import AlgoContext, O2OConfig, OnlineMode, optimize
from saferl.algos.registry import register
from saferl.algos.sac_n import SACN, SACNConfig, ensemble_td_loss
from saferl.data import Batch, OfflineDataset
from saferl.nn import Normalizer, TanhGaussianActor, draws


@dataclass
class RO2OConfig(SACNConfig, O2OConfig):
    """SAC-N's fields (``steps``: the paper trains 2.5M offline updates), the online phase's and RO2O's own."""

    # online phase (ro2o_ft_mujoco.py: memory_size, train_starts, one update per env step, no offline replay)
    online_buffer_size: int = 250_000
    online_offline_ratio: float = 0.0
    online_warmup: int = 2_500
    online_regularizers: bool = True  # false: plain SAC-N losses online (authors' commit 26ad528)
    # the authors' SAC-N setup
    normalize_obs: bool = True
    edac_init: bool = True
    # RO2O regularisers
    sample_size: int = 20  # n perturbations per state
    q_smooth_eps: float = 0.01  # ε_Q
    q_smooth_tau: float = 0.2  # τ_s
    beta_q_smooth: float = 1e-4  # η₁ (hard-coded in the authors' code)
    ood_smooth_eps: float = 0.01  # ε_ood
    beta_ood: float = 0.1  # η₂
    q_ood_uncertainty_reg: float = 1.0  # α_u at the start
    q_ood_uncertainty_reg_min: float = 0.1  # α_u floor (and its value online)
    q_ood_uncertainty_decay: float = 5e-7  # α_u decrease per update
    policy_smooth_eps: float = 0.01  # ε_P
    beta_policy: float = 1.0  # η₃


def perturb(obs: torch.Tensor, n: int, eps: float) -> torch.Tensor:
    """n perturbed copies of every state, ``[n·B, S]``; row j·B + b is s_b + δ_j, δ_j ~ U[−ε, ε]^S shared
    across the batch (the authors draw ``size × dim S`` offsets and repeat them over the batch)."""
    delta = (draws.rand(n, 1, obs.shape[-1], like=obs) * 2 - 1) * eps
    return (obs.unsqueeze(0) + delta).reshape(-1, obs.shape[-1])


def asymmetric_smoothness(q_clean: torch.Tensor, q_perturbed: torch.Tensor, tau: float) -> torch.Tensor:
    """Value smoothness: E_b max_j mean_i[(1 − τ)·max(Δ, 0)² + τ·min(Δ, 0)²], Δ_ij = Q_i(ŝ_j) − Q_i(s).

    ``q_clean`` is ``[E, B]``, ``q_perturbed`` ``[E, n, B]``; with τ < 0.5 increases of Q under perturbation
    cost more than decreases (ro2o_mujoco.py ``get_qf_loss``).
    """
    diff = q_perturbed - q_clean.unsqueeze(1)
    per_offset = ((1 - tau) * diff.clamp(min=0).square() + tau * diff.clamp(max=0).square()).mean(0)  # [n, B]
    return per_offset.amax(0).mean()


def ood_uncertainty_loss(q_ood: torch.Tensor, alpha_u: torch.Tensor | float) -> torch.Tensor:
    """MSE of ``q_ood`` ``[E, N]`` to the fixed target Q − α_u·std_ensemble(Q): pushes Q down on perturbed
    states by an amount proportional to the ensemble's disagreement (ro2o_mujoco.py ``get_ood_loss``)."""
    target = (q_ood - alpha_u * q_ood.std(0)).detach()
    return (q_ood - target).square().mean()


def symmetric_kl(p: Normal, q: Normal) -> torch.Tensor:
    """KL(p ‖ q) + KL(q ‖ p) of diagonal Gaussians, summed over the last (action) dimension."""
    return (kl_divergence(p, q) + kl_divergence(q, p)).sum(-1)


def policy_smoothness(actor: TanhGaussianActor, obs: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """E_b max_j symmetric KL between the pre-tanh Gaussians at s and at ŝ_j (``perturbed`` is ``[n·B, S]``
    from `perturb`); gradients flow through both sides, as in ro2o_mujoco.py ``get_policy_loss``."""
    n = perturbed.shape[0] // obs.shape[0]
    clean, noisy = actor.distribution(obs), actor.distribution(perturbed)
    clean = Normal(clean.loc.repeat(n, 1), clean.scale.repeat(n, 1))  # row j·B + b ↔ state b
    return symmetric_kl(clean, noisy).view(n, obs.shape[0]).amax(0).mean()


@torch.no_grad()
def edac_init_(module: nn.Module, last_range: float) -> None:
    """EDAC's initialisation (used by the authors): hidden biases 0.1, last layer U(−r, r) (actor 1e-3,
    critic 3e-3). Works for MLP and EnsembleMLP."""
    layers = [m for m in module.modules() if hasattr(m, "weight") and m.weight.dim() >= 2]
    for layer in layers[:-1]:
        nn.init.constant_(layer.bias, 0.1)
    nn.init.uniform_(layers[-1].weight, -last_range, last_range)
    nn.init.uniform_(layers[-1].bias, -last_range, last_range)


@register("ro2o")
class RO2O(SACN):
    """SAC-N's networks and steps (`saferl.algos.sac_n`) with RO2O's normaliser, init and regularisers."""

    Config = RO2OConfig
    online_mode = OnlineMode.OFF_POLICY
    log_std_min = -5.0  # EDAC's range [−5, 2], kept by the authors, instead of SAC's [−20, 2]

    def __init__(self, config: RO2OConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        self.obs_norm = Normalizer(ctx.obs_dim).to(ctx.device)
        # α_u lives in a buffer: checkpointed with the networks, decayed in place without a host sync
        self.register_buffer("ood_uncertainty", torch.tensor(float(config.q_ood_uncertainty_reg), device=ctx.device))

    def init_networks(self) -> None:
        if self.config.edac_init:
            edac_init_(self.actor.net, 1e-3)
            edac_init_(self.critic.net, 3e-3)

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        # dataset mean/std, kept for the online phase too (the fine-tuning script normalises with them)
        if self.config.normalize_obs:
            self.obs_norm.fit(data.observations)
        return data

    def start_online(self, offline: OfflineDataset) -> None:
        # authors' README: fine-tune with q_ood_uncertainty_reg = reg_min and decay 0 (at the floor, decay is a no-op)
        self.ood_uncertainty.fill_(self.config.q_ood_uncertainty_reg_min)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch, regularize=True)

    def online_update(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self._update(batch, regularize=self.config.online_regularizers)

    def _update(self, batch: Batch, regularize: bool) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.num_updates += 1
        obs, next_obs = self.obs_norm(batch.observations), self.obs_norm(batch.next_observations)
        act, reward = batch.actions, batch.rewards * cfg.reward_scale
        n = cfg.sample_size
        metrics: dict[str, torch.Tensor] = {}

        # temperature, then actor (EDAC/CORL order): L_π = SAC-N's actor loss (+ policy smoothness)
        new_act, logp = self.actor(obs)
        alpha = self.temperature_step(logp)
        loss_sac = self.actor_loss(obs, new_act, logp, alpha)
        loss_pi = loss_sac
        if regularize:
            smooth_pi = policy_smoothness(self.actor, obs, perturb(obs, n, cfg.policy_smooth_eps))
            loss_pi = loss_pi + cfg.beta_policy * smooth_pi
            metrics["policy_smooth_loss"] = smooth_pi.detach()
        optimize(self.optimizers["actor"], loss_pi)

        # critic ensemble: TD to the min-target (+ value smoothness and OOD penalty on perturbed states)
        target = self.min_target(next_obs, reward, batch.terminals, alpha)
        q_data = self.critic(obs, act)
        loss_td = ensemble_td_loss(q_data, target)
        loss_q = loss_td
        if regularize:
            b = obs.shape[0]
            # one critic call over all n·B perturbed rows; Q(s, a) keeps its gradient (authors' get_qf_loss)
            q_pert = self.critic(perturb(obs, n, cfg.q_smooth_eps), act.repeat(n, 1)).view(-1, n, b)
            smooth_q = asymmetric_smoothness(q_data, q_pert, cfg.q_smooth_tau)
            ood_obs = perturb(obs, n, cfg.ood_smooth_eps)
            with torch.no_grad():
                ood_act = self.actor(ood_obs, with_logprob=False)[0]
            loss_ood = ood_uncertainty_loss(self.critic(ood_obs, ood_act), self.ood_uncertainty)
            loss_q = loss_q + cfg.beta_q_smooth * smooth_q + cfg.beta_ood * loss_ood
            metrics["q_smooth_loss"] = smooth_q.detach()
            metrics["ood_loss"] = loss_ood.detach()
            metrics["ood_uncertainty"] = self.ood_uncertainty.clone()
            # linear decay of α_u to its floor, one step per update (authors: inside get_ood_loss)
            self.ood_uncertainty.sub_(cfg.q_ood_uncertainty_decay).clamp_(min=cfg.q_ood_uncertainty_reg_min)
        self.critic_step(loss_q)
        metrics.update(
            critic_loss=loss_td.detach(),
            actor_loss=loss_sac.detach(),
            alpha=alpha,
            q_data=q_data.mean().detach(),
            q_policy_std=self.q_policy_std(obs, new_act),
        )
        return metrics

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return super().policy(self.obs_norm(obs), deterministic)
