"""f-DVL, dual-V learning (Sikchi, Zheng, Zhang & Niekum, "Dual RL", ICLR 2024), and XQL, its reverse-KL case
(Garg, Hejna, Geist & Ermon, "Extreme Q-Learning", ICLR 2023). Both follow the authors' JAX code: `offline/` of
hari-sikchi/DVL (f-DVL) and of Div99/XQL (XQL); file names below are inside those folders.

With Q̄ = min_i Q̄_i the *target* critics, x = Q̄(s, a) − V(s) and λ the loss temperature (``--temp``):

    V  ← argmin E_{(s,a) ~ ½(ρ + U)}[ λ·f*(x) − (1 − λ)·x ]          χ²:  f*(x) = max(x + x²/4, 0)
                                                                     TV:  f*(x) = max(x, 0)
    V  ← argmin E_{(s,a) ~ ½(ρ + U)}[ e^(z−m) − z·e^(−m) − e^(−m) ]    reverse KL (XQL's Gumbel regression):
                                   z = min(x/λ, max_clip),  m = stopgrad(max(max_batch z, −1))
    π  ← argmax E_ρ[ min(exp(β·(Q̄(s, a) − V(s))), 100) · log π(a|s) ]                    V: after its step
    Q  ← argmin Σ_i E_ρ[ Huber_20( Q_i(s, a) − (r + γ·(1 − done)·V(s')) ) ]             V: after its step
    Q̄  ← (1 − τ)·Q̄ + τ·Q

ρ is the dataset; ½(ρ + U) appends ``sample_random_times`` uniform actions per state to the value batch (with 0:
ρ alone). The reverse-KL loss is e^(−m)·(e^z − z − 1), Gumbel regression scaled by e^(−m) so that a batch with
a large residual cannot blow the gradient up (an adaptive step size, `critic.py`); clipped z get no gradient.
χ² and TV ignore ``max_clip``. Every update runs V → π → Q → Q̄ (`learner.py`), so the actor and the Q target
both read the value net this step produced.

Networks (`learner.py`, `value_net.py`, `policy.py`, `configs/mujoco_config.py`): twin Q critics, a value net
with LayerNorm, a Gaussian actor with tanh'd mean and state-independent log-std in [−5, 2] (saferl's
`GaussianActor`, as IQL's), cosine decay of the actor's learning rate to 0 over the run, Adam 3e-4 for all
three. The authors use orthogonal initialisation; we keep torch's default, as `iql.py` does.

Rewards: both repositories' `train_offline.py` (``normalize``, applied to hopper/halfcheetah/walker2d only; AntMaze
gets r − 1 instead) multiply rewards by 1000 / (max − min episode return of the dataset); ``normalize_rewards``
does that in `prepare`, on by default.

Defaults. ``algo=fdvl``: the f-DVL README's locomotion command (``--f=chi-square --temp=1 --max_clip=5
--sample_random_times=1``) over the flag defaults of `train_offline.py` (batch 1024, 1M steps, double Q) and
`configs/mujoco_config.py` (AWR temperature 3, LayerNorm value net). Its other README commands: AntMaze
``--f=total-variation --temp=0.8 --max_clip=5``; Kitchen/Adroit ``--f=reverse-KL --temp=8 --max_clip=5
--sample_random_times=1``. That last spelling does not select reverse KL in the DVL code, which compares
``args.f == 'reverse-kl'`` and has no branch for any other string (the value loss is never assigned: the run
fails when the update is traced); ``f`` here is read case-insensitively.

``algo=xql``: f fixed to reverse KL, XQL's own settings. Its loss temperature is tuned per dataset
(`reproduce/mujoco/*.sh`, all with double Q; batch 1024 unless noted):

    halfcheetah  medium-expert  temp 1   max_clip 5                 ← the default here
                 medium         temp 1   max_clip 7   noise=True    (`mujoco_consistent.sh`: temp 2, batch 256)
                 medium-replay  temp 1   max_clip 5   batch 256
    hopper       medium-expert  temp 2   max_clip 7   sample_random_times=1
                 medium         temp 5   max_clip 7
                 medium-replay  temp 2   max_clip 7   batch 256
    walker2d     medium-expert  temp 2   max_clip 5   batch 256
                 medium         temp 10  max_clip 7
                 medium-replay  temp 5   max_clip 5

``noise``: Gaussian noise (std ``noise_std``, clipped to ±0.5 of the half-range) on the value batch's dataset
actions (`critic.py`; XQL's halfcheetah-medium). The authors' code draws that noise for the whole value batch but
adds it to the dataset actions alone, a shape mismatch once random actions are appended, so it runs there only
with ``sample_random_times=0``; here the two combine: the dataset actions get noise, the random ones do not.

Not ported: ``num_v_updates`` (1 by default), the critic gradient penalty ``grad_pen`` (off by default) and XQL's
``log_loss`` variant (off by default).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize
from saferl.algos.iql import awr_weights
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import GaussianActor, QEnsemble, ValueNet, draws, soft_update

DIVERGENCES = ("chi-square", "total-variation", "reverse-kl")
HUBER_DELTA = 20.0  # `critic.py`: huber_loss(q − target, delta=20.0)
RETURN_SPAN = 1000.0  # `train_offline.py` normalize: rewards · 1000 / (max − min episode return)


@dataclass
class FDVLConfig(AlgoConfig):
    batch_size: int = 1024  # `train_offline.py` flag
    steps: int = 1_000_000  # `train_offline.py` flag max_steps
    f: str = "chi-square"  # chi-square | total-variation | reverse-kl (`train_offline.py` flag f; README)
    loss_temp: float = 1.0  # λ, the `--temp` flag: mixing weight (χ², TV) or Gumbel temperature (reverse KL)
    max_clip: float | None = 5.0  # reverse KL: z = min(x/λ, max_clip); None: no clip (README; flag default 7)
    sample_random_times: int = 1  # uniform actions per state appended to the value batch (README)
    noise: bool = False  # Gaussian noise on the value batch's dataset actions (`critic.py`)
    noise_std: float = 0.1
    double_q: bool = True  # min of two critics; false: one critic (flag `double`)
    hidden: tuple[int, ...] = (256, 256)
    value_layer_norm: bool = True  # `configs/mujoco_config.py` layernorm (value net only)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    beta: float = 3.0  # AWR inverse temperature (`configs/mujoco_config.py` temperature)
    max_weight: float = 100.0  # AWR weights clipped (`actor.py`)
    normalize_rewards: bool = True  # r · 1000 / (max − min episode return) (`train_offline.py` normalize)

    def __post_init__(self) -> None:
        f = str(self.f).lower()  # the DVL README writes reverse-KL, its code compares with reverse-kl
        if f not in DIVERGENCES:
            raise ValueError(f"algo.f={self.f!r} is not allowed: f must be one of {', '.join(DIVERGENCES)}")
        self.f = f
        temp = self.loss_temp
        if isinstance(temp, bool) or not isinstance(temp, int | float) or not math.isfinite(temp) or temp <= 0:
            raise ValueError(
                f"algo.loss_temp={temp!r} is not allowed: it must be a number > 0; use e.g. algo.loss_temp=1"
            )
        if f != "reverse-kl" and temp > 1:
            raise ValueError(
                f"algo.loss_temp={temp!r} is not allowed with f={f}: λ weighs λ·f*(x) − (1 − λ)·x and must lie in "
                "(0, 1]; use e.g. algo.loss_temp=1"
            )
        times = self.sample_random_times
        if isinstance(times, bool) or not isinstance(times, int) or times < 0:
            raise ValueError(
                f"algo.sample_random_times={times!r} is not allowed: it must be a whole number >= 0; use e.g. "
                "algo.sample_random_times=1"
            )


@dataclass
class XQLConfig(FDVLConfig):
    """XQL's `reproduce/mujoco/halfcheetah_expert.sh` over its `train_offline.py` flag defaults."""

    f: str = "reverse-kl"
    loss_temp: float = 1.0
    max_clip: float | None = 5.0
    sample_random_times: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.f != "reverse-kl":
            raise ValueError(
                f"algo.f={self.f!r} is not allowed for xql, which is f-DVL with f=reverse-kl; for another f use "
                f"algo=fdvl algo.f={self.f}"
            )


# -- the value losses: λ·f*(x) − (1 − λ)·x per divergence, x = Q̄(s, a) − V(s) (`critic.py`) ---------------------
def chi_square_loss(x: torch.Tensor, temp: float) -> torch.Tensor:
    return temp * (x + x.pow(2) / 4).clamp(min=0.0) - (1.0 - temp) * x


def total_variation_loss(x: torch.Tensor, temp: float) -> torch.Tensor:
    return temp * x.clamp(min=0.0) - (1.0 - temp) * x


def reverse_kl_loss(x: torch.Tensor, temp: float, max_clip: float | None) -> torch.Tensor:
    """XQL's Gumbel regression e^z − z − 1 at z = x/λ, scaled by e^(−m) with m the batch's largest z (at least
    −1, no gradient): e^(z−m) − z·e^(−m) − e^(−m)."""
    z = x / temp
    if max_clip is not None:
        z = z.clamp(max=max_clip)
    m = z.amax().clamp(min=-1.0).detach()
    return torch.exp(z - m) - z * torch.exp(-m) - torch.exp(-m)


def value_loss(x: torch.Tensor, f: str, temp: float, max_clip: float | None) -> torch.Tensor:
    if f == "chi-square":
        per_sample = chi_square_loss(x, temp)
    elif f == "total-variation":
        per_sample = total_variation_loss(x, temp)
    elif f == "reverse-kl":
        per_sample = reverse_kl_loss(x, temp, max_clip)
    else:
        raise ValueError(f"unknown f {f!r}; use one of {', '.join(DIVERGENCES)}")
    return per_sample.mean()


def q_loss(qs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i mean_batch Huber_20(Q_i − target) over the critics ``qs`` [E, B] (`critic.py`)."""
    huber = F.huber_loss(qs, target.expand_as(qs), reduction="none", delta=HUBER_DELTA)
    return huber.mean(dim=1).sum()


def build_dual_v_networks(algo: Algorithm, config: AlgoConfig, ctx: AlgoContext, critics: int) -> None:
    """The Dual-RL learners' networks on ``algo`` (`learner.py`; f-DVL, XQL and ReCOIL alike): ``critics`` Q
    critics ``q`` and their target copy ``q_target``, a value net ``v`` (LayerNorm per ``value_layer_norm``) and
    IQL's Gaussian ``actor``; Adam for each, and cosine decay of the actor's learning rate over the run
    (``optax.cosine_decay_schedule(actor_lr, max_steps)``). ``config`` has hidden, the three learning rates,
    value_layer_norm and steps."""
    o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
    algo.q = QEnsemble(o, a, critics, h).to(ctx.device)
    algo.q_target = copy.deepcopy(algo.q).requires_grad_(False)  # `learner.py`: same init as the critic
    algo.v = ValueNet(o, h, layer_norm=config.value_layer_norm).to(ctx.device)
    algo.actor = GaussianActor(o, a, ctx.action_low, ctx.action_high, h).to(ctx.device)
    algo.optimizers["v"] = adam(algo.v.parameters(), lr=config.value_lr)
    algo.optimizers["actor"] = adam(algo.actor.parameters(), lr=config.actor_lr)
    algo.optimizers["q"] = adam(algo.q.parameters(), lr=config.critic_lr)
    algo.schedulers["actor"] = torch.optim.lr_scheduler.CosineAnnealingLR(algo.optimizers["actor"], config.steps)


@register("fdvl")
class FDVL(Algorithm):
    Config = FDVLConfig

    def __init__(self, config: FDVLConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        build_dual_v_networks(self, config, ctx, critics=2 if config.double_q else 1)

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        if not self.config.normalize_rewards:
            return data
        returns = data.episode_rewards
        span = float(returns.max() - returns.min())
        if not span > 0:
            raise ValueError(
                f"cannot normalise rewards: max − min episode return = {span:g}; set algo.normalize_rewards=false"
            )
        return replace(data, rewards=data.rewards * (RETURN_SPAN / span), _packed=None)

    def value_batch(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The states and actions of the value loss (`critic.py` update_v): the dataset's (with ``noise``: plus
        clipped Gaussian noise), then ``sample_random_times`` uniform actions of the action box per state."""
        cfg, scale = self.config, self.actor.scale
        n = cfg.sample_random_times
        random_act = None
        if n > 0:  # ½(ρ + Unif): "add random actions to smooth loss computation"
            random_act = scale(draws.rand(n * obs.shape[0], act.shape[-1], like=act) * 2 - 1)
        if cfg.noise:  # XQL's halfcheetah-medium: N(0, std) clipped to ±0.5, in the [−1, 1] box
            noise = (draws.randn_like(act) * cfg.noise_std).clamp(-0.5, 0.5)
            act = scale((scale.inverse(act) + noise).clamp(-1.0, 1.0))
        if random_act is None:
            return obs, act
        return torch.cat([obs, obs.repeat_interleave(n, dim=0)]), torch.cat([act, random_act])

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        obs, act = batch.observations, batch.actions

        # 1. V: the dual-V loss at x = min Q̄(s, a) − V(s), target critics (`critic.py` update_v)
        v_obs, v_act = self.value_batch(obs, act)
        with torch.no_grad():
            target_q = self.q_target(v_obs, v_act).amin(0)
        loss_v = value_loss(target_q - self.v(v_obs), cfg.f, cfg.loss_temp, cfg.max_clip)
        optimize(self.optimizers["v"], loss_v)

        # 2. π: advantage-weighted regression on min Q̄(s, a) − V_new(s) (`actor.py`, called with the new V)
        with torch.no_grad():
            q_data = self.q_target(obs, act).amin(0) if cfg.noise else target_q[: obs.shape[0]]
            v_new = self.v(obs)
            advantage = q_data - v_new
        weights = awr_weights(advantage, cfg.beta, cfg.max_weight)
        loss_pi = -(weights * self.actor.log_prob(obs, act)).mean()
        optimize(self.optimizers["actor"], loss_pi)
        self.schedulers["actor"].step()

        # 3. Q: Huber regression towards r + γ·(1 − done)·V_new(s') (`critic.py` update_q, with the new V)
        with torch.no_grad():
            target = batch.rewards + cfg.gamma * (1.0 - batch.terminals) * self.v(batch.next_observations)
        loss_q = q_loss(self.q(obs, act), target)
        optimize(self.optimizers["q"], loss_q)

        # 4. Q̄: Polyak averaging (`learner.py` target_update)
        soft_update(self.q_target.parameters(), self.q.parameters(), cfg.tau)
        return {
            "value_loss": loss_v.detach(),
            "q_loss": loss_q.detach(),
            "actor_loss": loss_pi.detach(),
            "advantage": advantage.mean(),
            "v": v_new.mean(),
            "q": q_data.mean(),
        }

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(obs, deterministic)


@register("xql")
class XQL(FDVL):
    Config = XQLConfig
