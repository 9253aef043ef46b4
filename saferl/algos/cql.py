"""Conservative Q-Learning, continuous actions (Kumar et al., NeurIPS 2020); defaults from CORL's `cql.py`.

SAC with twin critics and automatic entropy tuning, plus the CQL(H) regulariser on each critic:

    α_cql · ( log Σ_{a ~ {U, π(s), π(s')}} exp(Q(s, a) − log density(a)) − Q(s, a_data) )

(importance-sampled log-sum-exp over 10 uniform, 10 current-policy and 10 next-policy actions, all evaluated
at s). With `lagrange=true` α_cql is tuned so that the gap stays at `target_action_gap`. States are
normalised with the dataset's statistics; networks use orthogonal initialisation (CORL).

Online fine-tuning (``online_steps=``) keeps the same update on batches that mix offline and online data
half and half (the Cal-QL paper's CQL baseline); ``online_cql=false`` drops the regulariser online (SAC).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from saferl.algos.base import AlgoContext, Algorithm, O2OConfig, OnlineMode, adam, optimize
from saferl.algos.registry import register
from saferl.data import Batch, OfflineDataset
from saferl.nn import Normalizer, QEnsemble, TanhGaussianActor, draws, orthogonal_init_, soft_update


@dataclass
class CQLConfig(O2OConfig):
    batch_size: int = 256
    steps: int = 100_000
    hidden: tuple[int, ...] = (256, 256, 256)
    actor_lr: float = 3e-5
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 5e-3
    target_entropy: float | None = None  # None: −act_dim
    backup_entropy: bool = False
    cql_alpha: float = 10.0
    cql_n_actions: int = 10
    cql_temp: float = 1.0
    importance_sample: bool = True
    lagrange: bool = False  # tune α_cql towards `target_action_gap`
    target_action_gap: float = 10.0
    max_target_backup: bool = False  # target = max over n sampled next actions
    bc_steps: int = 0  # initial steps where the actor does behaviour cloning
    normalize_obs: bool = True
    orthogonal_init: bool = True
    reward_scale: float = 1.0
    online_cql: bool = True  # keep the conservative regulariser during online fine-tuning
    online_offline_ratio: float = 0.5  # Cal-QL's mixing ratio, also used for CQL fine-tuning there


def cql_gap(q_data: torch.Tensor, q_ood: torch.Tensor, temp: float) -> torch.Tensor:
    """Per critic: mean over the batch of temp·logsumexp(Q_ood/temp) − Q(s, a_data); q_ood is [E, B, K]."""
    return (torch.logsumexp(q_ood / temp, dim=-1) * temp - q_data).mean(dim=1)


@register("cql")
class CQL(Algorithm):
    Config = CQLConfig
    online_mode = OnlineMode.OFF_POLICY

    def __init__(self, config: CQLConfig, ctx: AlgoContext):
        super().__init__(config, ctx)
        o, a, h = ctx.obs_dim, ctx.act_dim, config.hidden
        self.obs_norm = Normalizer(o).to(ctx.device)
        self.actor = TanhGaussianActor(o, a, ctx.action_low, ctx.action_high, h).to(ctx.device)
        self.critic = QEnsemble(o, a, 2, h).to(ctx.device)
        if config.orthogonal_init:
            orthogonal_init_(self.actor.net)
            orthogonal_init_(self.critic.net, last_gain=1.0)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.nn.Parameter(torch.zeros((), device=ctx.device))
        if config.lagrange:
            self.log_alpha_cql = torch.nn.Parameter(torch.zeros((), device=ctx.device))
        self.target_entropy = config.target_entropy if config.target_entropy is not None else -float(a)
        self.optimizers["actor"] = adam(self.actor.parameters(), lr=config.actor_lr)
        self.optimizers["critic"] = adam(self.critic.parameters(), lr=config.critic_lr)
        self.optimizers["alpha"] = adam([self.log_alpha], lr=config.actor_lr)
        if config.lagrange:
            self.optimizers["alpha_cql"] = adam([self.log_alpha_cql], lr=config.critic_lr)
        # log density of the uniform proposal over the action box (importance sampling)
        self.uniform_log_density = -float(torch.log(2 * self.actor.scale.half_range).sum())
        self.online = False  # set by start_online; with online_cql=false the regulariser is off from then on

    def prepare(self, data: OfflineDataset) -> OfflineDataset:
        if self.config.normalize_obs:
            self.obs_norm.fit(data.observations)
        return data

    def start_online(self, offline: OfflineDataset) -> None:
        self.online = True

    def policy_q_floor(self, batch: Batch) -> torch.Tensor | None:
        """Lower bound for the policy-action Q-values inside the regulariser (None for CQL; Cal-QL's hook)."""
        return None

    def _repeated_policy(self, obs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n policy samples per state: actions [B, n, A], log-probs [B, n]."""
        act, logp = self.actor(obs.repeat_interleave(n, dim=0))
        return act.view(obs.shape[0], n, -1), logp.view(obs.shape[0], n)

    def _q_at(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Critic values of [B, n, A] actions at their states: [E, B, n]."""
        b, n, _ = actions.shape
        q = self.critic(obs.repeat_interleave(n, dim=0), actions.reshape(b * n, -1))
        return q.view(q.shape[0], b, n)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.config
        self.num_updates += 1
        obs, next_obs = self.obs_norm(batch.observations), self.obs_norm(batch.next_observations)
        act, reward = batch.actions, batch.rewards * cfg.reward_scale

        # SAC temperature and actor
        new_act, logp = self.actor(obs)
        loss_alpha = -(self.log_alpha * (logp + self.target_entropy).detach()).mean()
        optimize(self.optimizers["alpha"], loss_alpha)
        alpha = self.log_alpha.exp().detach()
        if self.num_updates <= cfg.bc_steps:
            loss_pi = (alpha * logp - self.actor.log_prob(obs, act)).mean()
        else:
            loss_pi = (alpha * logp - self.critic(obs, new_act).amin(0)).mean()
        optimize(self.optimizers["actor"], loss_pi)

        # TD target
        with torch.no_grad():
            if cfg.max_target_backup:
                next_acts, next_logps = self._repeated_policy(next_obs, cfg.cql_n_actions)
                q_next = self._target_q_at(next_obs, next_acts).amin(0)
                q_next, best = q_next.max(dim=-1)
                next_logp = next_logps.gather(1, best[:, None]).squeeze(1)
            else:
                next_act, next_logp = self.actor(next_obs)
                q_next = self.critic_target(next_obs, next_act).amin(0)
            if cfg.backup_entropy:
                q_next = q_next - alpha * next_logp
            target = reward + cfg.gamma * (1.0 - batch.terminals) * q_next
        q_data = self.critic(obs, act)
        loss_td = (q_data - target.unsqueeze(0)).pow(2).mean(dim=1)

        if self.online and not cfg.online_cql:  # plain SAC fine-tuning
            loss_q = loss_td.sum()
            optimize(self.optimizers["critic"], loss_q)
            soft_update(self.critic_target.parameters(), self.critic.parameters(), cfg.tau)
            return {"critic_loss": loss_q.detach(), "actor_loss": loss_pi.detach(), "alpha": alpha}

        # CQL regulariser: push down a soft maximum over out-of-data actions, push up the data action
        n = cfg.cql_n_actions
        with torch.no_grad():
            rand_act = self.actor.scale(draws.rand(obs.shape[0], n, act.shape[-1], like=obs) * 2 - 1)
        cur_act, cur_logp = self._repeated_policy(obs, n)
        nxt_act, nxt_logp = self._repeated_policy(next_obs, n)
        q_rand, q_cur, q_nxt = (
            self._q_at(obs, rand_act),
            self._q_at(obs, cur_act.detach()),
            self._q_at(obs, nxt_act.detach()),
        )
        floor = self.policy_q_floor(batch)
        if floor is not None:  # Cal-QL: policy actions are never pushed below the reference value
            q_cur = torch.maximum(q_cur, floor.view(1, -1, 1))
            q_nxt = torch.maximum(q_nxt, floor.view(1, -1, 1))
        if cfg.importance_sample:
            q_ood = torch.cat(
                [q_rand - self.uniform_log_density, q_nxt - nxt_logp.detach(), q_cur - cur_logp.detach()], dim=-1
            )
        else:
            q_ood = torch.cat([q_rand, q_data.unsqueeze(-1), q_nxt, q_cur], dim=-1)
        gap = cql_gap(q_data, q_ood, cfg.cql_temp)  # [E]
        if cfg.lagrange:
            # α_cql grows while the gap exceeds the target (dual ascent on the constraint gap ≤ target)
            alpha_cql = self.log_alpha_cql.exp().clamp(0.0, 1e6)
            loss_alpha_cql = -0.5 * (alpha_cql * cfg.cql_alpha * (gap.detach() - cfg.target_action_gap)).sum()
            optimize(self.optimizers["alpha_cql"], loss_alpha_cql)
            penalty = alpha_cql.detach() * cfg.cql_alpha * (gap - cfg.target_action_gap)
        else:
            penalty = cfg.cql_alpha * gap
        loss_q = (loss_td + penalty).sum()
        optimize(self.optimizers["critic"], loss_q)
        soft_update(self.critic_target.parameters(), self.critic.parameters(), cfg.tau)
        return {
            "critic_loss": loss_td.sum().detach(),
            "cql_gap": gap.mean().detach(),
            "actor_loss": loss_pi.detach(),
            "alpha": alpha,
        }

    def _target_q_at(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b, n, _ = actions.shape
        q = self.critic_target(obs.repeat_interleave(n, dim=0), actions.reshape(b * n, -1))
        return q.view(q.shape[0], b, n)

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.actor(self.obs_norm(obs), deterministic=deterministic, with_logprob=False)[0]
