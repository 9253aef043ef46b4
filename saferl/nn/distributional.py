"""Distributional (histogram) critics trained by cross-entropy on HL-Gauss targets.

A scalar value target y becomes a histogram over ``num_bins`` equal bins of [v_min, v_max] by integrating a
normal density centred at y over every bin and renormalising over the support (Imani & White 2018; "HL-Gauss",
Farebrother et al. 2024, arXiv 2403.03950). The critic predicts bin logits; its value is the expectation of the
bin centres under softmax(logits), and its loss is the cross-entropy between the target histogram and the
prediction. This follows the PA-RL authors' code exactly (`MaxSobolMark/PolicyAgnosticRL`,
`jaxrl_m/networks/distributional.py::hl_gauss_transform`, `cross_entropy_loss_on_scalar`,
`jaxrl_m/networks/actor_critic_nets.py::DistributionalCritic`):

* σ = 0.75·(v_max − v_min)/num_bins; bin edges = linspace(v_min, v_max, num_bins + 1);
* p_i(y) = [Φ((e_{i+1} − y)/(√2σ)) − Φ((e_i − y)/(√2σ))] / [Φ((e_N − y)/(√2σ)) − Φ((e_0 − y)/(√2σ))], computed in
  log space (log Φ differences) so that targets far outside the support still give a valid histogram. Note the
  √2: the authors' code divides by √2·σ inside Φ (the erf form of the HL-Gauss paper written with Φ), so the
  Gaussian that is integrated has standard deviation √2·σ, not σ. Kept as written.
* Q(s, a) = Σ_i softmax(logits)_i · (e_i + e_{i+1})/2;  loss = −Σ_i p_i(y)·log softmax(logits)_i.

`DistributionalQEnsemble` is the authors' critic network: an ensemble of MLP trunks (every hidden layer followed by
LayerNorm and swish, ``activate_final=True``) and ONE bin head shared by all members (in jaxrl_m the final
``nn.Dense(num_bins)`` sits outside the vmapped trunk), orthogonal initialisation with gain √2, except 1e-2 for
the last hidden layer (``kernel_scale_final``) and the head (``critic_kwargs.kernel_init_params.scale``), zero
biases, LayerNorm ε = 1e-6 (flax).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from saferl.nn.ensemble import EnsembleLayerNorm, EnsembleLinear, EnsembleMLP
from saferl.nn.mlp import activation

_SQRT2 = math.sqrt(2.0)
_LOG2 = math.log(2.0)


# ---------------------------------------------------------------------------------------------------
# the HL-Gauss transform (numerically stable log-CDF differences, as tensorflow-probability / the authors)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(−|x|)), stable for small and large |x|."""
    x = x.abs()
    return torch.where(x < _LOG2, torch.log(-torch.expm1(-x)), torch.log1p(-torch.exp(-x)))


def _log_sub_exp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(exp(max(x, y)) − exp(min(x, y)))."""
    larger, smaller = torch.maximum(x, y), torch.minimum(x, y)
    return larger + _log1mexp((larger - smaller).clamp(min=0.0))


def _normal_cdf_log_difference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(Φ(x) − Φ(y)) for x ≥ y; uses log(Φ(−y) − Φ(−x)) when y ≥ 0, where Φ loses precision near 1."""
    y_positive = y >= 0
    x_hat = torch.where(y_positive, -y, x)
    y_hat = torch.where(y_positive, -x, y)
    return _log_sub_exp(torch.special.log_ndtr(x_hat), torch.special.log_ndtr(y_hat))


def hl_gauss_sigma(v_min: float, v_max: float, num_bins: int) -> float:
    """The authors' default σ: 0.75 bin widths (the HL-Gauss paper's recommendation)."""
    return 0.75 * (v_max - v_min) / num_bins


def hl_gauss_probs(target: torch.Tensor, edges: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Histogram ``[..., num_bins]`` of scalar targets ``[...]`` over the bins with edges ``[num_bins + 1]``
    (``hl_gauss_transform(...)[0]``, `transform_to_probs`)."""
    z = (edges - target.unsqueeze(-1)) / (_SQRT2 * sigma)
    bin_log_probs = _normal_cdf_log_difference(z[..., 1:], z[..., :-1])
    log_norm = _normal_cdf_log_difference(z[..., -1], z[..., 0])
    return torch.exp(bin_log_probs - log_norm.unsqueeze(-1))


def histogram_mean(probs: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Σ_i p_i · centre_i (`transform_from_probs`)."""
    return (probs * (edges[:-1] + edges[1:]) / 2).sum(-1)


def cross_entropy_on_scalar(
    logits: torch.Tensor, target: torch.Tensor, edges: torch.Tensor, sigma: float | torch.Tensor
) -> torch.Tensor:
    """−Σ_i p_i(target)·log softmax(logits)_i per element (`cross_entropy_loss_on_scalar`): logits ``[E, B, bins]``,
    targets ``[B]`` (shared by the E members) → ``[E, B]``. The target histogram carries no gradient."""
    with torch.no_grad():
        probs = hl_gauss_probs(target.detach(), edges, sigma)
    return -(probs * torch.log_softmax(logits, dim=-1)).sum(-1)


def value_range(values: torch.Tensor, gamma: float) -> tuple[float, float]:
    """A support that holds every discounted sum of per-step values drawn from ``values``:
    [min(0, min v)/(1 − γ), max(0, max v)/(1 − γ)] (widened to one unit when it would be empty). With the
    authors' AntMaze rewards r ∈ {−1, 0} (reward_bias −1) and γ = 0.99 it is their [−100, 0]."""
    lo = min(0.0, float(values.min())) / (1.0 - gamma)
    hi = max(0.0, float(values.max())) / (1.0 - gamma)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


# ---------------------------------------------------------------------------------------------------
# the critic network


class DistributionalQEnsemble(nn.Module):
    """E histogram Q-functions; ``forward(obs [B, o], act [B, a]) -> (Q [E, B], logits [E, B, bins])``.

    The value range lives in a buffer (``edges``) so that an algorithm can set it from its data
    (`set_range`) after construction and checkpoints restore it.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 10,
        hidden: Sequence[int] = (256, 256),
        num_bins: int = 128,
        v_min: float = -100.0,
        v_max: float = 0.0,
        act: str = "silu",
        layer_norm: bool = True,
        hidden_gain: float = math.sqrt(2.0),
        last_hidden_gain: float = 1e-2,
        head_gain: float = 1e-2,
    ):
        super().__init__()
        if not hidden:
            raise ValueError("a distributional critic needs at least one hidden layer")
        self.ensemble_size, self.num_bins = ensemble_size, num_bins
        # trunk: the last hidden layer is EnsembleMLP's output layer; its LayerNorm + activation follow here
        self.trunk = EnsembleMLP(ensemble_size, obs_dim + act_dim, hidden[-1], hidden[:-1], act, layer_norm)
        self.final_norm = EnsembleLayerNorm(ensemble_size, hidden[-1]) if layer_norm else None
        self.final_act = activation(act)
        self.head = nn.Linear(hidden[-1], num_bins)  # shared by all members (jaxrl_m's DistributionalCritic)
        for m in self.modules():
            if isinstance(m, EnsembleLayerNorm):
                m.eps = 1e-6  # flax's LayerNorm epsilon
        self.register_buffer("edges", torch.linspace(v_min, v_max, num_bins + 1))
        self._init(hidden_gain, last_hidden_gain, head_gain)

    @torch.no_grad()
    def _init(self, hidden_gain: float, last_hidden_gain: float, head_gain: float) -> None:
        linears = [m for m in self.trunk.modules() if isinstance(m, EnsembleLinear)]
        for i, layer in enumerate(linears):
            gain = last_hidden_gain if i == len(linears) - 1 else hidden_gain
            for matrix in layer.weight:  # each member's [in, out] kernel, as flax's orthogonal initialiser
                nn.init.orthogonal_(matrix, gain=gain)
            layer.bias.zero_()
        nn.init.orthogonal_(self.head.weight, gain=head_gain)
        self.head.bias.zero_()

    @torch.no_grad()
    def set_range(self, v_min: float, v_max: float) -> None:
        """Place the bins on [v_min, v_max]."""
        if not v_max > v_min:
            raise ValueError(f"a value range needs v_max > v_min, got [{v_min}, {v_max}]")
        self.edges.copy_(torch.linspace(v_min, v_max, self.num_bins + 1, device=self.edges.device))

    @property
    def sigma(self) -> torch.Tensor:
        """0.75 bin widths, as a 0-d tensor (no host read inside an update)."""
        return 0.75 * (self.edges[-1] - self.edges[0]) / self.num_bins

    def logits(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        h = self.trunk(torch.cat([obs, action], dim=-1))
        if self.final_norm is not None:
            h = self.final_norm(h)
        return self.head(self.final_act(h))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.logits(obs, action)
        return histogram_mean(torch.softmax(logits, dim=-1), self.edges), logits

    def q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Expected values only, ``[E, B]``."""
        return self(obs, action)[0]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-member, per-sample cross-entropy ``[E, B]`` against scalar targets ``[B]``."""
        return cross_entropy_on_scalar(logits, target, self.edges, self.sigma)


__all__ = [
    "DistributionalQEnsemble",
    "cross_entropy_on_scalar",
    "histogram_mean",
    "hl_gauss_probs",
    "hl_gauss_sigma",
    "value_range",
]
