"""Constrained Decision Transformer (Liu et al., "Constrained Decision Transformer for Offline Safe RL",
ICML 2023), with OSRL's `cdt.py` architecture and `cdt_configs.py` defaults.

A causal transformer over (R̂_t, Ĉ_t, s_t, a_t) tokens, R̂/Ĉ the reward/cost returns-to-go, predicts a_t from
the s_t token. One trained model serves every cost threshold: at evaluation the cost-to-go starts at the
threshold κ and the reward-to-go at a target return, and both count down with the rewards and costs seen.

Training, as OSRL:
  * episodes are sampled with probability ∝ max(0, 50 − cost return) (`cost_sample`, `cost_transform`),
    windows of `seq_len` steps start uniformly inside the episode and are padded at the end;
  * cost-to-go inputs are transformed to 50 − Ĉ (`cost_transform`), then scaled by `cost_scale` (OSRL scales
    first, 50 − cost_scale·Ĉ; the same at its default cost_scale = 1). The tokens pass a LayerNorm, which keeps
    the direction of c·w but not the size of c, so inputs of tens (50 − Ĉ) barely reach the model: on PointRobot
    (recipe v1 data) the actions ignore the cost target for 8,000+ updates at cost_scale = 1 and follow it after
    2,000 at 0.1, the return-to-go's scale (benchmarks/baselines.md);
  * stochastic tanh-Gaussian action head with learned entropy temperature (target entropy −|A|), plus an
    auxiliary 2-class "will this step cost" prediction from the action token (weight 0.02);
  * Pareto-frontier return augmentation (`augment_percent` of episodes copied with relabelled
    returns-to-go pointing above the frontier, so high targets map to the best safe behaviour).
AdamW, linear warm-up, gradient clipping 0.25.

Evaluation targets (our choice, OSRL lists hand-picked (return, cost) pairs per task): cost-to-go = the
threshold κ, reward-to-go = the best episode return in the data among episodes with cost ≤ κ. On data whose safe
episodes reach nearly the best return (PointRobot's recipe v2) that reward target is the same at every κ, and
only the cost token tells the thresholds apart; the reference suite's CDT follows its reward token and not its
cost token there (`benchmarks/cdt_targets.py`, benchmarks/reference.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from saferl.algos.base import AlgoConfig, AlgoContext, Algorithm, adam, optimize, optimize_accumulated
from saferl.algos.registry import register
from saferl.data import OfflineDataset
from saferl.nn import draws
from saferl.nn.actors import tanh_log_det
from saferl.nn.functional import masked_mean


@dataclass
class CDTConfig(AlgoConfig):
    batch_size: int = 2048
    steps: int = 100_000
    embedding_dim: int = 128
    num_layers: int = 3
    num_heads: int = 8
    seq_len: int = 10
    attention_dropout: float = 0.1
    residual_dropout: float = 0.1
    embedding_dropout: float = 0.1
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4
    clip_grad: float = 0.25
    lr_warmup_steps: int = 500
    temperature_lr: float = 1e-4
    init_temperature: float = 0.1
    loss_cost_weight: float = 0.02
    reward_scale: float = 0.1
    cost_scale: float = 1.0
    cost_transform_offset: float = 50.0  # cost-to-go enters as offset − Ĉ; episodes sampled ∝ offset − C
    cost_sample: bool = True
    augment_percent: float = 0.2
    augment_deg: int = 4  # degree of the polynomial fitted to the Pareto frontier
    augment_min_reward: float = 0.05  # fraction of the return range the relabelled target sits above the frontier
    augment_max_reward_decrease: float = 1.0  # fraction of the return range a donor episode may fall below it
    # sequences per forward/backward pass; the gradient is accumulated over a batch's chunks (the same loss).
    # 0 = auto: 256 on CPU, where a 2,048-sequence pass spills out of the caches and runs 2.8x slower per
    # sequence (benchmarks/throughput.md), the whole batch on CUDA
    micro_batch: int = 0


def reward_targets(ep_reward: np.ndarray, ep_cost: np.ndarray, thresholds: list[float]) -> list[float]:
    """CDT's evaluation reward-to-go per threshold κ: the best episode return among episodes with cost ≤ κ (the
    lowest return where none is)."""
    return [
        float(ep_reward[ep_cost <= t].max()) if (ep_cost <= t).any() else float(ep_reward.min()) for t in thresholds
    ]


class SequenceBatch(NamedTuple):
    observations: torch.Tensor  # [B, K, obs]
    actions: torch.Tensor  # [B, K, act] in [-1, 1]
    returns_to_go: torch.Tensor  # [B, K], scaled
    costs_to_go: torch.Tensor  # [B, K], scaled
    timesteps: torch.Tensor  # [B, K] long
    costs: torch.Tensor  # [B, K] step costs (0/1 labels for the auxiliary head)
    mask: torch.Tensor  # [B, K] 1 for real steps, 0 for padding


def self_attention(
    mha: nn.MultiheadAttention, x: torch.Tensor, attn_mask: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> torch.Tensor:
    """``mha(x, x, x)`` (batch first; boolean masks, True = may not attend), without the weights.

    PyTorch's attention kernels draw the dropout of the attention weights internally, from the global stream.
    Inside a member stack (K seeds as one model, `saferl.nn.draws`) each member must draw its own, so there the
    attention is written out as SDPA's math backend computes it (the one a CPU run uses with dropout), with the
    dropout from `draws.dropout`: the same mask as the single run's. (On CUDA a single run uses a fused kernel
    whose dropout draws other numbers: members there are independent and correct, not bit twins of it.)
    """
    if not (draws.routed() and mha.training and mha.dropout > 0.0):
        return mha(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)[0]
    b, n, dim = x.shape
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).unflatten(-1, (3, mha.num_heads, -1))
    q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, n, head_dim]
    scale = math.sqrt(1.0 / math.sqrt(q.shape[-1]))  # 1/√d, split between queries and keys (as SDPA's math)
    logits = (q * scale) @ (k.transpose(-2, -1) * scale)
    if key_padding_mask is not None:
        attn_mask = attn_mask | key_padding_mask[:, None, None, :]
    weights = draws.dropout(logits.masked_fill(attn_mask, float("-inf")).softmax(-1), mha.dropout)
    # laid out as MHA's output, sequence-major: the residual dropout draws its mask in that order
    return mha.out_proj((weights @ v).permute(2, 0, 1, 3).reshape(n, b, dim)).transpose(0, 1)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm causal self-attention block (OSRL/CORL DT)."""

    def __init__(self, seq_len: int, dim: int, heads: int, attention_dropout: float, residual_dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = draws.Dropout(residual_dropout)
        self.attention = nn.MultiheadAttention(dim, heads, attention_dropout, batch_first=True)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), draws.Dropout(residual_dropout)
        )
        self.register_buffer("causal_mask", ~torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool)))

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[1]
        attn = self_attention(self.attention, self.norm1(x), self.causal_mask[:n, :n], padding_mask)
        x = x + self.drop(attn)
        return x + self.mlp(self.norm2(x))


class CDTModel(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, episode_len: int, cfg: CDTConfig):
        super().__init__()
        d, k = cfg.embedding_dim, cfg.seq_len
        self.cfg, self.act_dim = cfg, act_dim
        self.timestep_emb = nn.Embedding(episode_len + k, d)  # extra k entries for padded steps
        self.state_emb, self.action_emb = nn.Linear(obs_dim, d), nn.Linear(act_dim, d)
        self.return_emb, self.cost_emb = nn.Linear(1, d), nn.Linear(1, d)
        self.emb_norm, self.emb_drop, self.out_norm = (
            nn.LayerNorm(d),
            draws.Dropout(cfg.embedding_dropout),
            nn.LayerNorm(d),
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(4 * k, d, cfg.num_heads, cfg.attention_dropout, cfg.residual_dropout)
            for _ in range(cfg.num_layers)
        )
        self.action_head = nn.Linear(d, 2 * act_dim)  # mean and log-std of the pre-tanh Gaussian
        self.cost_head = nn.Linear(d, 2)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:  # GPT-style init, as OSRL
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, states, actions, rtg, ctg, timesteps, padding_mask=None) -> tuple[Normal, torch.Tensor]:
        b, k = states.shape[:2]
        time = self.timestep_emb(timesteps)
        # OSRL's cost_transform 50 − Ĉ, taken in cost units and then scaled like every cost input
        # (OSRL: 50 − cost_scale·Ĉ; the same at its default cost_scale = 1)
        ctg = self.cfg.cost_transform_offset * self.cfg.cost_scale - ctg
        tokens = [
            self.return_emb(rtg.unsqueeze(-1)) + time,
            self.cost_emb(ctg.unsqueeze(-1)) + time,
            self.state_emb(states) + time,
            self.action_emb(actions) + time,
        ]
        seq = torch.stack(tokens, dim=2).reshape(b, 4 * k, -1)  # R̂_0 Ĉ_0 s_0 a_0 R̂_1 …
        if padding_mask is not None:
            padding_mask = padding_mask.repeat_interleave(4, dim=1)
        out = self.emb_drop(self.emb_norm(seq))
        for block in self.blocks:
            out = block(out, padding_mask)
        out = self.out_norm(out).reshape(b, k, 4, -1)
        mean, log_std = self.action_head(out[:, :, 2]).chunk(2, dim=-1)
        log_std = -5.0 + 0.5 * (2.0 + 5.0) * (torch.tanh(log_std) + 1)  # bounded to [-5, 2] as OSRL
        cost_logits = F.log_softmax(self.cost_head(out[:, :, 3]), dim=-1)
        return Normal(mean, log_std.exp()), cost_logits


def pareto_frontier(costs: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """Indices of the episodes no other episode beats on both lower cost and higher reward."""
    order = np.lexsort((-rewards, costs))  # by cost, then best reward first
    frontier, best = [], -np.inf
    for i in order:
        if rewards[i] > best:
            frontier.append(i)
            best = rewards[i]
    return np.array(frontier)


@register("cdt")
class CDT(Algorithm):
    Config = CDTConfig
    threshold_conditioned = True  # trained once; κ is the cost-to-go it starts each evaluation episode from

    def __init__(self, config: CDTConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        self.model = CDTModel(ctx.obs_dim, ctx.act_dim, ctx.max_episode_steps, config).to(ctx.device)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(config.init_temperature), device=ctx.device))
        self.target_entropy = -float(ctx.act_dim)
        self.optimizers["model"] = adam(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, decoupled=True
        )
        self.optimizers["temperature"] = adam([self.log_temperature], lr=config.temperature_lr)
        warmup = max(1, config.lr_warmup_steps)
        self.schedulers["model"] = torch.optim.lr_scheduler.LambdaLR(
            self.optimizers["model"], lambda step: min((step + 1) / warmup, 1.0)
        )
        low, high = (
            torch.as_tensor(np.asarray(v, dtype=np.float32), device=ctx.device)
            for v in (ctx.action_low, ctx.action_high)
        )
        self.register_buffer("act_center", (high + low) / 2)
        self.register_buffer("act_half", (high - low) / 2)
        # per-threshold evaluation targets (reward-to-go), filled from the data in `prepare`
        thresholds = sorted({*(ctx.task.cost_thresholds if ctx.task else ()), float(ctx.cost_limit)})
        self.register_buffer("target_thresholds", torch.tensor(thresholds, dtype=torch.float32, device=ctx.device))
        self.register_buffer("target_returns", torch.zeros(len(thresholds), device=ctx.device))
        self._episodes: dict[str, torch.Tensor] | None = None
        self.micro_batch = config.micro_batch or (256 if ctx.device.type == "cpu" else config.batch_size)

    # -- data -----------------------------------------------------------------------------------
    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        cfg = self.config
        starts = data.episode_starts.cpu().numpy()
        lengths = np.diff(starts)
        ep_reward = data.episode_rewards.cpu().numpy()
        ep_cost = data.episode_costs.cpu().numpy()
        # returns-to-go (γ = 1) for every transition, via reversed cumulative sums inside each episode
        rtg = _reverse_cumsum(data.rewards.cpu().numpy().astype(np.float64), starts)
        ctg = _reverse_cumsum(data.costs.cpu().numpy().astype(np.float64), starts)

        # Pareto augmentation: copies of episodes whose return targets are relabelled above the frontier
        ep_index = np.arange(len(lengths))
        rtg_offset = np.zeros(len(lengths))
        ctg_offset = np.zeros(len(lengths))
        n_aug = int(cfg.augment_percent * len(lengths))
        if n_aug > 0 and len(lengths) > cfg.augment_deg + 1:
            donors, r_shift, c_shift = self._augment(ep_cost, ep_reward, n_aug)
            ep_index = np.concatenate([ep_index, donors])
            rtg_offset = np.concatenate([rtg_offset, r_shift])
            ctg_offset = np.concatenate([ctg_offset, c_shift])
        costs_of_sample = ep_cost[ep_index] + ctg_offset
        if cfg.cost_sample:
            prob = np.clip(cfg.cost_transform_offset - costs_of_sample, 0.0, None)
            prob = prob / prob.sum() if prob.sum() > 0 else np.full(len(prob), 1.0 / len(prob))
        else:
            prob = np.full(len(ep_index), 1.0 / len(ep_index))
        device = data.device
        self._episodes = {
            "index": torch.as_tensor(ep_index, device=device),
            "start": torch.as_tensor(starts[ep_index], device=device),
            "length": torch.as_tensor(lengths[ep_index], device=device),
            "rtg_offset": torch.as_tensor(rtg_offset * cfg.reward_scale, dtype=torch.float32, device=device),
            "ctg_offset": torch.as_tensor(ctg_offset * cfg.cost_scale, dtype=torch.float32, device=device),
            "prob": torch.as_tensor(prob, dtype=torch.float32, device=device),
            "rtg": torch.as_tensor(rtg * cfg.reward_scale, dtype=torch.float32, device=device),
            "ctg": torch.as_tensor(ctg * cfg.cost_scale, dtype=torch.float32, device=device),
        }
        self._data = data
        self.target_returns.copy_(torch.tensor(reward_targets(ep_reward, ep_cost, self.target_thresholds.tolist())))
        return data

    def _augment(self, ep_cost: np.ndarray, ep_reward: np.ndarray, n: int):
        """OSRL's `augmentation`: sample (cost, reward) targets above a polynomial fit of the Pareto frontier,
        give each to the nearest episode with no more cost and not much less reward, and shift that episode's
        returns-to-go so they start at the target."""
        cfg = self.config
        rng = np.random.default_rng(0)
        span = max(float(ep_reward.max() - ep_reward.min()), 1e-6)
        front = pareto_frontier(ep_cost, ep_reward)
        deg = min(cfg.augment_deg, max(len(front) - 1, 0))
        curve = np.poly1d(np.polyfit(ep_cost[front], ep_reward[front], deg=deg))
        cost_targets = np.linspace(ep_cost.min(), ep_cost.max(), n)
        low = curve(cost_targets) + cfg.augment_min_reward * span
        reward_targets = rng.uniform(low, np.maximum(low, ep_reward.max()))
        donors = []
        for c, r in zip(cost_targets, reward_targets, strict=True):
            ok = (ep_cost <= c) & (ep_reward >= curve(c) - cfg.augment_max_reward_decrease * span)
            if not ok.any():
                ok = ep_cost <= c
            candidates = np.flatnonzero(ok)
            dist = np.hypot(ep_cost[candidates] - c, ep_reward[candidates] - r)
            donors.append(candidates[np.argmin(dist)])
        donors = np.array(donors)
        return donors, reward_targets - ep_reward[donors], cost_targets - ep_cost[donors]

    def sample(self, data: OfflineDataset, batch_size: int, generator: torch.Generator | None = None) -> SequenceBatch:
        if self._episodes is None or self._data is not data:
            self.prepare(data)
        ep, k = self._episodes, self.config.seq_len
        which = torch.multinomial(ep["prob"], batch_size, replacement=True, generator=generator)
        length = ep["length"][which]
        offset = (torch.rand(batch_size, device=length.device, generator=generator) * length).long()
        steps = offset[:, None] + torch.arange(k, device=length.device)[None]  # [B, K]
        mask = (steps < length[:, None]).float()
        idx = ep["start"][which, None] + torch.minimum(steps, length[:, None] - 1)
        batch = data.batch(idx.reshape(-1))
        shape = (batch_size, k)
        unit_actions = ((batch.actions - self.act_center) / self.act_half).clamp(-1.0, 1.0)
        return SequenceBatch(
            observations=batch.observations.view(*shape, -1) * mask[..., None],
            actions=unit_actions.view(*shape, -1) * mask[..., None],
            returns_to_go=(ep["rtg"][idx] + ep["rtg_offset"][which, None]) * mask,
            costs_to_go=(ep["ctg"][idx] + ep["ctg_offset"][which, None]) * mask,
            timesteps=steps,
            costs=batch.costs.view(shape) * mask,
            mask=mask,
        )

    # -- update ---------------------------------------------------------------------------------
    def update(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        cfg = self.config
        temperature = self.log_temperature.exp()
        n_valid, n_steps = batch.mask.sum(), batch.mask.numel()  # the batch's means divide by these
        terms: dict[str, torch.Tensor] = {}  # each loss term as the whole batch's mean, summed over chunks

        def chunk_losses():
            for i in range(0, batch.mask.shape[0], self.micro_batch):
                part = SequenceBatch(*(t[i : i + self.micro_batch] for t in batch))
                # a chunk's means, weighted by its share of the batch: their sum is the whole batch's mean
                share_valid, share_steps = part.mask.sum() / n_valid, part.mask.numel() / n_steps
                log_lik, entropy, cost_nll = self._chunk_terms(part)
                chunk = {"log_lik": log_lik * share_valid, "entropy": entropy * share_valid}
                chunk["cost"] = cost_nll * share_steps
                for name, value in chunk.items():
                    terms[name] = terms[name] + value.detach() if name in terms else value.detach()
                loss_act = -(chunk["log_lik"] + temperature.detach() * chunk["entropy"])
                yield loss_act + cfg.loss_cost_weight * chunk["cost"]

        # clips exactly the model's gradients, accumulated over the chunks
        optimize_accumulated(self.optimizers["model"], chunk_losses(), max_grad_norm=cfg.clip_grad)
        self.schedulers["model"].step()
        loss_temp = temperature * (terms["entropy"] - self.target_entropy)
        optimize(self.optimizers["temperature"], loss_temp)
        return {
            "action_nll": -terms["log_lik"],
            "cost_loss": terms["cost"],
            "entropy": terms["entropy"],
            "temperature": temperature.detach(),
        }

    def _chunk_terms(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Over the real steps of ``batch``: mean log-likelihood of the data actions (tanh-Gaussian), one-sample
        entropy estimate; over all its steps: mean NLL of the "this step costs" label."""
        valid = batch.mask > 0
        dist, cost_logits = self.model(
            batch.observations,
            batch.actions,
            batch.returns_to_go,
            batch.costs_to_go,
            batch.timesteps,
            padding_mask=~valid,
        )
        eps = 1e-6
        pre_tanh = torch.atanh(batch.actions.clamp(-1 + eps, 1 - eps))
        log_lik = dist.log_prob(pre_tanh).sum(-1) - tanh_log_det(pre_tanh)
        sample = draws.rsample_normal(dist.loc, dist.scale)
        entropy = -(dist.log_prob(sample).sum(-1) - tanh_log_det(sample))
        labels = (batch.costs > 0).long()
        cost_nll = (
            F.nll_loss(cost_logits.reshape(-1, 2), labels.reshape(-1), reduction="none") * batch.mask.reshape(-1)
        ).mean()
        return masked_mean(log_lik, valid), masked_mean(entropy, valid), cost_nll

    # -- acting ---------------------------------------------------------------------------------
    def target_return(self, cost_target: float) -> float:
        """Reward-to-go to condition on for a cost threshold (unscaled)."""
        t = self.target_thresholds
        if t.numel() == 0:
            return 0.0
        i = int(torch.searchsorted(t, torch.tensor([cost_target], device=t.device), right=True).clamp(min=1) - 1)
        return float(self.target_returns[i])

    def episodic_policy(self, cost_target: float | None = None) -> CDTEpisodes:
        cost_target = self.ctx.cost_limit if cost_target is None else cost_target
        return CDTEpisodes(self, self.target_return(cost_target), cost_target)

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Single-step acting from a fresh context (no history), conditioned on the run's cost limit."""
        ctx = self.episodic_policy()
        ctx.reset(obs.shape[0])
        return torch.as_tensor(ctx.act(obs.cpu().numpy(), np.arange(obs.shape[0])), device=obs.device)


class CDTEpisodes:
    """Per-episode context for evaluation: keeps each env's last `seq_len` steps and counts the
    returns-to-go down with the rewards and costs the env reports."""

    def __init__(self, algo: CDT, target_return: float, target_cost: float):
        self.algo = algo
        self.target_return, self.target_cost = target_return, target_cost

    def reset(self, num_envs: int) -> None:
        algo, k = self.algo, self.algo.config.seq_len
        dev = algo.ctx.device
        t_max = algo.ctx.max_episode_steps + 1
        self.states = torch.zeros(num_envs, t_max, algo.ctx.obs_dim, device=dev)
        self.actions = torch.zeros(num_envs, t_max, algo.ctx.act_dim, device=dev)
        self.rtg = torch.zeros(num_envs, t_max, device=dev)
        self.ctg = torch.zeros(num_envs, t_max, device=dev)
        self.rtg[:, 0] = self.target_return * algo.config.reward_scale
        self.ctg[:, 0] = self.target_cost * algo.config.cost_scale
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.k = k

    @torch.no_grad()
    def act(self, obs: np.ndarray, env_ids: np.ndarray) -> np.ndarray:
        algo = self.algo
        ids = torch.as_tensor(env_ids, device=algo.ctx.device)
        t = int(self.t[env_ids[0]])  # environments advance in lock-step
        self.states[ids, t] = torch.as_tensor(obs, dtype=torch.float32, device=algo.ctx.device)
        lo = max(0, t + 1 - self.k)
        steps = torch.arange(lo, t + 1, device=algo.ctx.device).expand(len(env_ids), -1)
        was_training = algo.model.training
        algo.model.eval()
        dist, _ = algo.model(
            self.states[ids, lo : t + 1],
            self.actions[ids, lo : t + 1],
            self.rtg[ids, lo : t + 1],
            self.ctg[ids, lo : t + 1],
            steps,
        )
        algo.model.train(was_training)
        unit = torch.tanh(dist.mean[:, -1])
        self.actions[ids, t] = unit
        return (algo.act_center + algo.act_half * unit).cpu().numpy()

    def observe(self, env_ids: np.ndarray, rewards: np.ndarray, costs: np.ndarray) -> None:
        cfg = self.algo.config
        ids = torch.as_tensor(env_ids, device=self.algo.ctx.device)
        t = int(self.t[env_ids[0]])
        dev = self.algo.ctx.device
        self.rtg[ids, t + 1] = (
            self.rtg[ids, t] - torch.as_tensor(rewards, dtype=torch.float32, device=dev) * cfg.reward_scale
        )
        self.ctg[ids, t + 1] = (
            self.ctg[ids, t] - torch.as_tensor(costs, dtype=torch.float32, device=dev) * cfg.cost_scale
        )
        self.t[env_ids] += 1


def _reverse_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Σ_{t' ≥ t} values[t'] within each episode (episodes are contiguous, delimited by ``starts``)."""
    out = np.empty_like(values)
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        out[a:b] = np.cumsum(values[a:b][::-1])[::-1]
    return out
