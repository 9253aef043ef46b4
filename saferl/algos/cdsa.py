"""CDSA: Conservative Denoising Score-based Algorithm (Liu, Yang & Li, arXiv 2406.07541, ECAI 2024), a plug-in
on top of ANY trained saferl policy: ``python -m saferl.run algo=cdsa init_from=<run dir of iql|td3bc|…>``.

Sources. No code was released. Of the paper, only its abstract, the start of its introduction and a third-party
summary of its method (sciencestack.ai's TL;DR) could be read with the tools this was written with; its
method section, equations, algorithm box and hyperparameter table could not. What those sources state:
the pre-trained offline policy is left unchanged ("we decouple the conservatism constraints from the
policy"); a *denoising score-based model* learns the gradient field ∇ log p of the dataset density "rather than
the dataset density itself"; an *inverse dynamics model* turns that state-space gradient ("state-gradient
guidance") into an auxiliary action component added to the pre-trained policy's action, steering the agent
towards high-density regions; the setting is a deterministic, continuous MDP; one score model serves any
pre-trained policy (plug-and-play). Everything else below is this file's reconstruction, listed as choices.

Training (every ``update``, one batch (s, a, s′) of the dataset; rewards and costs are never read):

    σ_1 > … > σ_L  geometric, σ_1 = sigma_max, σ_L = sigma_min         (NCSN noise levels, normalised states)
    score     L_DSM(θ) = E_{s, i, z} ½·σ_i²·‖ s_θ(s + σ_i·z, σ_i) + z/σ_i ‖²       z ~ N(0, I), i ~ U{1..L}
    inverse   L_I(φ)   = E ‖ I_φ(s, s′) − a ‖²                                     a = I(s, s′), deterministic MDP
    forward   L_F(ψ)   = E ‖ F_ψ(s, a) − (s′ − s) ‖²                               (normalised state change)

The DSM loss is Song & Ermon's (NeurIPS 2019, Eq. 5–6: λ(σ) = σ², target −(s̃ − s)/σ² = −z/σ), with their 2020
output scaling s_θ(x, σ) = net(x, log σ)/σ, which makes the weighted loss ½‖net + z‖².

Acting (``policy``), the plug-in step:

    a₀   = π_base(s)                                       the frozen base policy (deterministic)
    ŝ′   = s + F_ψ(s, a₀)                                  where a₀ would take the agent
    s*   = ŝ′;  for σ in guide_sigmas:  s* ← s* + λ·σ²·s_θ(s*, σ)       (score guidance, normalised states)
    Δa   = I_φ(s, s*) − I_φ(s, ŝ′)                         the auxiliary action component
    a    = clip(a₀ + Δa, action box)

With λ = 1 and one σ the guidance step is Tweedie's denoiser E[s_clean | s̃ = ŝ′] at noise level σ: the next
state moved onto the data at resolution σ. With λ = 0 Δa = 0 exactly and CDSA acts as its base.

Choices the sources leave open, and what this file does:

1. Score domain: states, normalised with the dataset's mean and std (the summary's "state-gradient guidance"
   through an inverse dynamics model); not actions or (s, a).
2. Score network: one noise-conditional MLP (NCSN) over [x, log σ], SiLU (a smooth field), output / σ.
3. Noise levels: ``num_sigmas`` = 10 geometric levels from ``sigma_max`` = 1 to ``sigma_min`` = 0.01 (NCSN's
   schedule; σ_1 about the spread of normalised states, σ_L far below one env step).
4. DSM weighting λ(σ) = σ² (NCSN); one level drawn uniformly per sample.
5. Where the gradient is taken: at the next state the base action leads to, ŝ′ = s + F_ψ(s, a₀), so that the
   correction acts on where the agent goes. This needs a forward model F_ψ, which the summary does not name; in
   the deterministic MDP the paper assumes it is as well defined as I_φ.
6. From state gradient to action: the difference Δa = I(s, s*) − I(s, ŝ′), not I(s, s*) alone, so that the base
   action is kept where no correction is asked for and the inverse model's bias cancels.
7. Guidance: ``guide_sigmas`` = (0.05,), ``guidance_scale`` λ = 1: one full Tweedie step at σ = 0.05, no Langevin
   noise (the adjustment is deterministic). Several σ (largest first) give an annealed, noise-free version of
   NCSN's sampler. Chosen on PointRobot (one CDSA, 10,000 updates of 128-128 nets, on three bases; 30 episodes;
   normalized reward / episode cost, base → CDSA): bc_all 0.58/24.8 → 0.67/0.0, iql 0.60/24.5 → 0.68/7.0,
   td3bc 0.55/2.9 → 0.90/0.0. Larger steps (σ = 0.2 with λ = 1) over-correct: the pull towards the local data
   mean fights the base's progress (bc_all 0.22, iql 0.15, td3bc 0.64); 30× smaller steps (σ = 0.05, λ = 0.03)
   barely act (bc_all 0.59/23.0).
8. Inverse / forward models: MLPs ``dynamics_hidden``; the inverse model reads [norm(s), norm(s′ − s)] (the state
   change has its own normaliser: it is ~100× smaller than the states) and ends in tanh onto the action box;
   the forward model reads [norm(s), action in [−1, 1]] and predicts the normalised state change.
9. Optimisation: Adam 3e-4 for the three networks (separately), batch 256, ``steps`` = 100,000 of 256-256 nets
   (~20 min on one core); ``preset=cpu`` (conf/algo_preset/cpu_cdsa.yaml) trains 10,000 updates of 128-128 nets.
10. saferl's addition (not the paper's): ``safe_only=true`` fits the score to the episodes whose cost return is
    within the run's cost limit (BC-Safe's filter), so the density it climbs is that of safe behaviour; the
    dynamics models still see every transition. Default false (the paper's whole-dataset density).

Base policy (`saferl.runs.load.load_base`): ``init_from=<run dir>`` names a finished run of a per-step policy on
the same task (iql, td3bc, cql, bc_all, bc_safe, fisor, …). It is rebuilt with `saferl.runs.load_run` from its
last checkpoint, frozen (no gradients, kept in eval mode) and held as the submodule ``base``: a CDSA checkpoint
carries the base's weights and config.yaml records the base run (``algo.base_run``, ``base_algo``,
``base_options``), so `load_run` / `saferl.load_policy` on a CDSA run rebuild base + adjustment without the base
run's directory. Built without a base (``CDSA(config, ctx)``), CDSA trains its adjustment alone and its stand-in
base acts with the centre of the action box; `CDSAAdjuster` then applies it to any policy.

Python wrapper: `CDSAAdjuster(base, cdsa)` puts a trained CDSA's adjustment on top of any policy of the same task
(a `saferl.load_policy` policy, an `Algorithm`, or a function of a batch of observations), e.g.
``CDSAAdjuster(saferl.load_policy(td3bc_dir), load_run(cdsa_dir)[0])``; it has ``act`` and is itself a policy
function for `saferl.evaluation.rollout`.

Cost of acting (benchmarks/cdsa_latency.py, one thread): ~1 ms per ``act`` call at batch 1 against ~0.2 ms for a
TD3+BC base, 4–5× (CDSA adds four small MLP passes and their Python overhead to the base's one); similar at
batch 32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, BasePolicyConfig, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, DatasetError, OfflineDataset
from saferl.nn import MLP, ActionScale, DeterministicActor, Normalizer, draws


@dataclass
class CDSAConfig(BasePolicyConfig):
    batch_size: int = 256
    steps: int = 100_000
    score_hidden: tuple[int, ...] = (256, 256)
    dynamics_hidden: tuple[int, ...] = (256, 256)
    score_lr: float = 3e-4
    dynamics_lr: float = 3e-4
    num_sigmas: int = 10  # L noise levels of the score model
    sigma_max: float = 1.0  # σ_1 (normalised state units)
    sigma_min: float = 0.01  # σ_L
    guide_sigmas: tuple[float, ...] = (0.05,)  # the levels of the guidance steps, largest first
    guidance_scale: float = 1.0  # λ: step λ·σ² along the score (1 = Tweedie's denoising step)
    safe_only: bool = False  # saferl's addition: the score of the safe episodes' states only


# -- CDSA's pieces, as functions ---------------------------------------------------------------------------------
def noise_levels(sigma_max: float, sigma_min: float, num: int) -> torch.Tensor:
    """σ_1 > … > σ_L, geometric (NCSN); one level is σ_max."""
    if num == 1:
        return torch.tensor([sigma_max])
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num))


def dsm_loss(score: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Denoising score matching with λ(σ) = σ² (Song & Ermon 2019, Eq. 5–6): the batch mean of
    ½·σ²·‖s_θ(x̃, σ) + z/σ‖², x̃ = x + σ·z (the target score −(x̃ − x)/σ² is −z/σ). ``sigma`` is [B, 1]."""
    return (0.5 * sigma.pow(2) * (score + noise / sigma).pow(2).sum(-1, keepdim=True)).mean()


def score_guidance(
    score: Callable[[torch.Tensor, float], torch.Tensor], x: torch.Tensor, sigmas: Sequence[float], scale: float
) -> torch.Tensor:
    """x ← x + λ·σ²·s(x, σ) for each σ in turn (one σ, λ = 1: Tweedie's denoiser at noise level σ)."""
    for sigma in sigmas:
        x = x + scale * sigma * sigma * score(x, sigma)
    return x


def adjusted_action(
    base_action: torch.Tensor,
    inverse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    state: torch.Tensor,
    predicted_next: torch.Tensor,
    guided_next: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
) -> torch.Tensor:
    """a₀ + Δa, Δa = I(s, s*) − I(s, ŝ′) (the auxiliary action component), clipped to the action box."""
    delta = inverse(state, guided_next) - inverse(state, predicted_next)
    return torch.maximum(torch.minimum(base_action + delta, high), low)


class NoiseConditionalScore(nn.Module):
    """s_θ(x, σ) = MLP([x, log σ]) / σ (NCSN; Song & Ermon 2020's output scaling)."""

    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = MLP(dim + 1, dim, hidden, act="silu")

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(*x.shape[:-1], 1)
        return self.net(torch.cat([x, sigma.log()], dim=-1)) / sigma


@register("cdsa")
class CDSA(Algorithm):
    Config = CDSAConfig
    base_policy = True  # init_from=<run dir>: the trained policy it adjusts
    batched_seeds = False  # one frozen base run per process: seeds=[…] runs one process per seed

    def __init__(self, config: CDSAConfig, ctx: AlgoContext, base: Algorithm | None = None):
        super().__init__(config, ctx)
        _check(config)
        o, a = ctx.obs_dim, ctx.act_dim
        # frozen: never trained, always acting deterministically. Without a base (the adjustment trained on its
        # own, for `CDSAAdjuster`) a stand-in acts with the centre of the action box; runs always pass init_from's
        self.base = (base if base is not None else CentreAction(ctx)).requires_grad_(False).eval()
        self.safe: OfflineDataset | None = None  # safe_only: the episodes the score is fitted to (prepare)
        self.obs_norm = Normalizer(o).to(ctx.device)
        self.delta_norm = Normalizer(o).to(ctx.device)  # s′ − s, ~100× smaller than s
        self.register_buffer("sigmas", noise_levels(config.sigma_max, config.sigma_min, config.num_sigmas))
        self.score = NoiseConditionalScore(o, config.score_hidden)
        self.forward_model = MLP(o + a, o, config.dynamics_hidden)
        self.inverse_model = DeterministicActor(2 * o, a, ctx.action_low, ctx.action_high, config.dynamics_hidden)
        self.action_scale = ActionScale(ctx.action_low, ctx.action_high)
        self.to(ctx.device)
        self.optimizers["score"] = adam(self.score.parameters(), lr=config.score_lr)
        self.optimizers["forward"] = adam(self.forward_model.parameters(), lr=config.dynamics_lr)
        self.optimizers["inverse"] = adam(self.inverse_model.parameters(), lr=config.dynamics_lr)

    def train(self, mode: bool = True) -> CDSA:
        super().train(mode)
        self.base.eval()  # the base policy acts as it was evaluated (no dropout), whatever the loop asks
        return self

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        self.delta_norm.fit(data.next_observations - data.observations)
        if self.config.safe_only:
            keep = data.episode_costs <= self.ctx.cost_limit
            if not bool(keep.any()):
                raise DatasetError(
                    f"CDSA safe_only: no episode has a cost return <= cost_limit={self.ctx.cost_limit} (lowest is "
                    f"{float(data.episode_costs.min()):g}); raise cost_limit or use algo.safe_only=false"
                )
            self.safe = data.select_episodes(keep)
            self.obs_norm.fit(self.safe.observations)
        else:
            self.safe = None
            self.obs_norm.fit(data.observations)
        return data

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> Any:
        batch = data.sample(batch_size, generator=generator)
        if self.safe is None:
            return batch, batch.observations
        return batch, self.safe.sample(batch_size, generator=generator).observations

    # -- training ------------------------------------------------------------------------------------------------
    def update(self, sampled: tuple[Batch, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch, score_states = sampled
        # 1. the score of the (normalised) state density, by denoising score matching over L noise levels
        x = self.obs_norm(score_states)
        level = draws.randint(len(self.sigmas), x.shape[0], device=x.device)
        sigma = self.sigmas[level].unsqueeze(-1)
        noise = draws.randn_like(x)
        loss_score = dsm_loss(self.score(x + sigma * noise, sigma), noise, sigma)
        optimize(self.optimizers["score"], loss_score)

        # 2. inverse and forward dynamics on every transition (deterministic MDP: a = I(s, s′), s′ = s + F(s, a))
        s = self.obs_norm(batch.observations)
        change = self.delta_norm(batch.next_observations - batch.observations)
        unit = self.action_scale.inverse(batch.actions)
        loss_forward = F.mse_loss(self.forward_model(torch.cat([s, unit], -1)), change)
        optimize(self.optimizers["forward"], loss_forward)
        loss_inverse = F.mse_loss(self.inverse_model(torch.cat([s, change], -1)), batch.actions)
        optimize(self.optimizers["inverse"], loss_inverse)
        return {
            "score_loss": loss_score.detach(),
            "forward_loss": loss_forward.detach(),
            "inverse_loss": loss_inverse.detach(),
        }

    # -- acting --------------------------------------------------------------------------------------------------
    def predict_next(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """ŝ′ = s + F_ψ(s, a) (raw state units)."""
        unit = self.action_scale.inverse(action)
        change = self.forward_model(torch.cat([self.obs_norm(obs), unit], -1))
        return obs + change * self.delta_norm.std + self.delta_norm.mean

    def inverse(self, obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """I_φ(s, s′): the action that takes s to s′ (raw units in, action box out)."""
        return self.inverse_model(torch.cat([self.obs_norm(obs), self.delta_norm(next_obs - obs)], -1))

    def guide(self, states: torch.Tensor) -> torch.Tensor:
        """s* from ŝ′: the score guidance steps, taken in normalised state space (raw units in and out; the
        step is added to the raw state, so no guidance returns ŝ′ exactly)."""
        x = self.obs_norm(states)
        guided = score_guidance(self.score, x, self.config.guide_sigmas, self.config.guidance_scale)
        return states + (guided - x) * self.obs_norm.std

    def adjust(self, obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        """The CDSA action for ``base_action`` (any policy's) at ``obs``."""
        predicted = self.predict_next(obs, base_action)
        high = self.action_scale.center + self.action_scale.half_range
        low = self.action_scale.center - self.action_scale.half_range
        return adjusted_action(base_action, self.inverse, obs, predicted, self.guide(predicted), low, high)

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.adjust(obs, self.base.policy(obs, deterministic))


class CentreAction(Algorithm):
    """The stand-in base of a CDSA built without one: the centre of the action box, always."""

    name = "centre_action"

    def __init__(self, ctx: AlgoContext):
        super().__init__(AlgoConfig(), ctx)
        self.scale = ActionScale(ctx.action_low, ctx.action_high).to(ctx.device)

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.scale.center.expand(obs.shape[0], -1)


def _check(config: CDSAConfig) -> None:
    """The noise levels and guidance a run can use (a ValueError is refused by the runs layer before training)."""
    if not 0.0 < config.sigma_min < config.sigma_max or not math.isfinite(config.sigma_max):
        raise ValueError(
            f"algo.sigma_min={config.sigma_min!r} and algo.sigma_max={config.sigma_max!r} must satisfy "
            "0 < sigma_min < sigma_max; use e.g. algo.sigma_min=0.01 algo.sigma_max=1.0"
        )
    outside = [s for s in config.guide_sigmas if not config.sigma_min <= s <= config.sigma_max]
    if not config.guide_sigmas or outside:
        raise ValueError(
            f"algo.guide_sigmas={list(config.guide_sigmas)!r} must be a non-empty list of noise levels the score was "
            f"trained on, within [sigma_min, sigma_max] = [{config.sigma_min:g}, {config.sigma_max:g}]; "
            "use e.g. algo.guide_sigmas=[0.1]"
        )
    if not math.isfinite(config.guidance_scale) or config.guidance_scale < 0:
        raise ValueError(
            f"algo.guidance_scale={config.guidance_scale!r} must be a finite number >= 0 (0 = the base policy); "
            "use e.g. algo.guidance_scale=1.0"
        )


class CDSAAdjuster:
    """Any policy of a task with a trained CDSA's adjustment on top: ``act(obs)`` = CDSA's action for the base's
    action (`CDSA.adjust`), clipped to the action box.

    ``base`` is a `saferl.load_policy` policy, an `Algorithm` (its deterministic ``act``) or any function of a
    batch of observations; ``cdsa`` a trained `CDSA` of the same task (e.g. ``load_run(cdsa_dir)[0]``), whose own
    base is not used. One observation ``[obs_dim]`` or a batch ``[B, obs_dim]``; the adjuster is itself a
    policy function (``saferl.evaluation.rollout(env_id, adjuster, episodes)``).
    """

    def __init__(self, base: Any, cdsa: CDSA):
        if not isinstance(cdsa, CDSA):
            got = type(cdsa).__name__
            raise TypeError(f"CDSAAdjuster needs a trained CDSA (load_run(<cdsa run dir>)[0]), got {got}")
        self.base, self.cdsa = base, cdsa.eval()
        act = getattr(base, "act", None)
        self._base_act = act if callable(act) else base

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        base_action = np.asarray(self._base_act(batch), dtype=np.float32).reshape(len(batch), -1)
        obs_t, base_t = (torch.as_tensor(x, device=self.cdsa.ctx.device) for x in (batch, base_action))
        with torch.inference_mode():
            action = self.cdsa.adjust(obs_t, base_t)
        out = action.float().cpu().numpy()
        return out[0] if single else out

    __call__ = act

    def __repr__(self) -> str:
        return f"CDSAAdjuster({self.base!r})"
