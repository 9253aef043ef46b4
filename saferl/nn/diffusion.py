"""DDPM building blocks for diffusion policies: noise schedule, time embedding, LN-ResNet ε-network,
the ε-prediction loss and a batched reverse sampler.

Follows the discrete-time DDPM of Ho et al. (2020) as used by IDQL (Hansen-Estruch et al., 2023) and
FISOR (Zheng et al., ICLR 2024; `ZhengYinan-AIR/FISOR:jaxrl5/networks/{diffusion,resnet,mlp}.py`):

* VP schedule, β_t = 1 − exp(−β_min/T − ½(β_max − β_min)(2t − 1)/T²), t = 1..T (`vp_beta_schedule`);
* time t ∈ {0..T−1} → learnable Fourier features (64) → MLP(128, 128, mish) → condition vector;
* ε_θ(s, a_t, t) = LN-ResNet(concat(a_t, s, cond(t)));
* reverse step x_{t−1} = (x_t − (1 − α_t)/√(1 − ᾱ_t)·ε̂)/√α_t + 1[t > 0]·√β_t·temperature·z, clipped to [−1, 1].

Actions live in [−1, 1]; mapping to an env's action box is the caller's job. Everything random takes an
optional ``torch.Generator`` (dropout included) so that an algorithm owning the generator can make its
updates and its action sampling reproducible and checkpointable. No algorithm-specific logic lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from saferl.nn import draws
from saferl.nn.mlp import activation

# flax's LayerNorm epsilon (the authors' networks are flax); torch's default is 1e-5
_LN_EPS = 1e-6


# ---------------------------------------------------------------------------------------------------
# noise schedule


def vp_beta_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    """Discrete variance-preserving schedule (Song et al. 2021; IDQL/FISOR ``vp_beta_schedule``).

    α_t = exp(−β_min/T − ½(β_max − β_min)(2t − 1)/T²) for t = 1..T, β_t = 1 − α_t. Returns β, float32 [T].
    """
    if steps < 1:
        raise ValueError(f"diffusion steps must be >= 1, got {steps}")
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alpha = torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
    return (1.0 - alpha).float()


class DiffusionSchedule(nn.Module):
    """β_t, α_t = 1 − β_t and ᾱ_t = ∏_{s≤t} α_s as buffers (they follow the module's device)."""

    def __init__(self, steps: int = 5, beta_min: float = 0.1, beta_max: float = 10.0):
        super().__init__()
        self.steps = steps
        betas = vp_beta_schedule(steps, beta_min, beta_max).double()
        alphas = 1.0 - betas
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas", alphas.float(), persistent=False)
        alpha_hats = torch.cumprod(alphas, 0)
        self.register_buffer("alpha_hats", alpha_hats.float(), persistent=False)
        # the reverse step's coefficients as Python floats: the sampler runs T tiny steps per action, where
        # indexing buffers and 0-d tensor arithmetic would cost more than the step itself
        self.step_coefs = [
            (1.0 / math.sqrt(a), (1.0 - a) / math.sqrt(1.0 - ah) / math.sqrt(a), math.sqrt(b))
            for a, ah, b in zip(alphas.tolist(), alpha_hats.tolist(), betas.tolist(), strict=True)
        ]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε for integer times ``t`` [B]."""
        a_hat = self.alpha_hats[t].unsqueeze(-1)
        return a_hat.sqrt() * x0 + (1.0 - a_hat).sqrt() * noise


# ---------------------------------------------------------------------------------------------------
# networks


def _dense(in_dim: int, out_dim: int, init: str) -> nn.Linear:
    """A linear layer initialised like flax: ``xavier`` (jaxrl5's ``default_init``) or ``lecun`` (flax Dense's
    default truncated normal); biases start at zero in both."""
    layer = nn.Linear(in_dim, out_dim)
    if init == "xavier":
        nn.init.xavier_uniform_(layer.weight)
    elif init == "lecun":
        std = math.sqrt(1.0 / in_dim) / 0.87962566103423978  # flax: truncated at ±2σ, rescaled to unit variance
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    else:
        raise ValueError(f"unknown init {init!r}")
    nn.init.zeros_(layer.bias)
    return layer


def dropout(x: torch.Tensor, p: float, training: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout that draws its mask from ``generator`` (``F.dropout`` only uses the global RNG)."""
    if not training or p <= 0.0:
        return x
    keep = draws.bernoulli_mask(x, 1.0 - p, generator)
    return x * keep / (1.0 - p)


class FourierFeatures(nn.Module):
    """Learnable Fourier features [cos(2π·x·Wᵀ), sin(2π·x·Wᵀ)], W ~ N(0, 0.2²) of shape [out/2, in]."""

    def __init__(self, in_dim: int = 1, out_dim: int = 64, std: float = 0.2):
        super().__init__()
        if out_dim % 2:
            raise ValueError(f"Fourier feature size must be even, got {out_dim}")
        self.kernel = nn.Parameter(torch.randn(out_dim // 2, in_dim) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.kernel.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class TimeEmbedding(nn.Module):
    """t → Fourier features → MLP(hidden..., mish) with no activation after the last layer."""

    def __init__(self, dim: int = 64, hidden: Sequence[int] = (128, 128), act: str = "mish"):
        super().__init__()
        self.features = FourierFeatures(1, dim)
        layers: list[nn.Module] = []
        prev = dim
        for i, width in enumerate(hidden):
            layers.append(_dense(prev, width, "xavier"))
            if i + 1 < len(hidden):
                layers.append(activation(act))
            prev = width
        self.mlp = nn.Sequential(*layers)
        self.out_dim = prev

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(t.float().reshape(-1, 1)))


class LNResNetBlock(nn.Module):
    """x + Dense(w)(act(Dense(4w)(LayerNorm(Dropout(x))))) — IDQL's MLPResNetBlock."""

    def __init__(self, width: int, dropout: float = 0.1, layer_norm: bool = True, act: str = "mish"):
        super().__init__()
        self.p = dropout
        self.norm = nn.LayerNorm(width, eps=_LN_EPS) if layer_norm else nn.Identity()
        self.fc1 = _dense(width, 4 * width, "lecun")
        self.act = activation(act)
        self.fc2 = _dense(4 * width, width, "lecun")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        h = dropout(x, self.p, self.training, generator)
        return x + self.fc2(self.act(self.fc1(self.norm(h))))


class LNResNet(nn.Module):
    """Dense(width) → blocks × LNResNetBlock → act → Dense(out) (IDQL/FISOR ``MLPResNet``)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int = 256,
        blocks: int = 3,
        dropout: float = 0.1,
        layer_norm: bool = True,
        act: str = "mish",
    ):
        super().__init__()
        self.inp = _dense(in_dim, width, "xavier")
        self.blocks = nn.ModuleList(LNResNetBlock(width, dropout, layer_norm, act) for _ in range(blocks))
        self.act = activation(act)
        self.out = _dense(width, out_dim, "xavier")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = block(x, generator)
        return self.out(self.act(x))

    def eval_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """``forward`` in eval mode (no dropout) as a closure over the parameters, for the sampler's T calls.

        The same kernels on the same operands as the modules (``nn.Linear`` on a matrix is ``addmm(b, x, Wᵀ)``,
        ``nn.LayerNorm`` is ``torch.layer_norm``, ``nn.Mish`` is ``F.mish``), so the results are bit-identical;
        it only skips the module calls, attribute look-ups and per-call transposes, which cost more than the
        tiny matmuls of batch-1 sampling. Build it per sampling call: it holds the parameters, not copies.
        """

        def act_fn(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
            return F.mish if type(module) is nn.Mish else module

        def norm_fn(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
            if type(module) is nn.LayerNorm:
                args = (module.normalized_shape, module.weight, module.bias, module.eps)
                return lambda h: torch.layer_norm(h, *args)
            return module

        w_in, b_in, w_out, b_out = self.inp.weight.t(), self.inp.bias, self.out.weight.t(), self.out.bias
        blocks = [
            (norm_fn(b.norm), b.fc1.bias, b.fc1.weight.t(), act_fn(b.act), b.fc2.bias, b.fc2.weight.t())
            for b in self.blocks
        ]
        out_act = act_fn(self.act)

        def run(x: torch.Tensor) -> torch.Tensor:
            x = torch.addmm(b_in, x, w_in)
            for norm, b1, w1, act, b2, w2 in blocks:
                x = x + torch.addmm(b2, act(torch.addmm(b1, norm(x), w1)), w2)
            return torch.addmm(b_out, out_act(x), w_out)

        return run


class NoisePredictor(nn.Module):
    """ε_θ(s, a_t, t) = LN-ResNet(concat(a_t, s, TimeEmbedding(t))) → [B, act_dim]."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        width: int = 256,
        blocks: int = 3,
        dropout: float = 0.1,
        layer_norm: bool = True,
        time_dim: int = 64,
        time_hidden: Sequence[int] = (128, 128),
        act: str = "mish",
    ):
        super().__init__()
        self.act_dim = act_dim
        self.time = TimeEmbedding(time_dim, time_hidden, act)
        self.net = LNResNet(act_dim + obs_dim + self.time.out_dim, act_dim, width, blocks, dropout, layer_norm, act)

    def forward(
        self, obs: torch.Tensor, noisy_action: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return self.denoise(obs, noisy_action, self.time(t), generator)

    def denoise(
        self,
        obs: torch.Tensor,
        noisy_action: torch.Tensor,
        time_embedding: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ε_θ with the time embedding given ([B, dim], or [1, dim] broadcast over the batch)."""
        emb = time_embedding.expand(noisy_action.shape[0], -1)
        return self.net(torch.cat([noisy_action, obs, emb], dim=-1), generator)

    def eval_denoiser(self, obs: torch.Tensor, steps: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """(x_t, t) ↦ ε_θ(obs, x_t, t) in eval mode for fixed ``obs`` [B, obs_dim], equal to ``denoise``.

        The network input [x_t | s | emb_t] lives in one buffer: s is written once per call, and each step
        writes only x_t and its time's embedding row (two copies instead of expand + cat of all three).
        """
        with torch.no_grad():  # every call embeds the same T times: once per call, not once per step
            emb = self.time(torch.arange(steps, device=obs.device)).unbind(0)
        a, o = self.act_dim, obs.shape[1]
        buf = torch.empty(obs.shape[0], a + o + emb[0].shape[0], device=obs.device, dtype=obs.dtype)
        x_part, obs_part, emb_part = buf.split([a, o, emb[0].shape[0]], dim=1)  # views, made once per call
        obs_part.copy_(obs)
        net = self.net.eval_forward()

        def eps(x: torch.Tensor, t: int) -> torch.Tensor:
            x_part.copy_(x)
            emb_part.copy_(emb[t])  # broadcast over the rows
            return net(buf)

        return eps


# ---------------------------------------------------------------------------------------------------
# training loss and sampling


def noise_prediction_loss(
    model: NoisePredictor,
    schedule: DiffusionSchedule,
    obs: torch.Tensor,
    actions: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample DDPM loss ‖ε_θ(s, x_t, t) − ε‖² (summed over action dims), t ~ U{0..T−1}; shape [B].

    Unreduced so that an algorithm can weight it (FISOR, QGPO, …) before averaging.
    """
    batch = actions.shape[0]
    t = draws.randint(schedule.steps, batch, device=actions.device, generator=generator)
    eps = draws.randn(*actions.shape, like=actions, generator=generator)
    eps_pred = model(obs, schedule.q_sample(actions, t, eps), t, generator)
    return (eps_pred - eps).pow(2).sum(dim=-1)


def ddpm_step(
    eps_pred: torch.Tensor,
    x: torch.Tensor,
    t: int,
    schedule: DiffusionSchedule,
    noise: torch.Tensor | None,
    temperature: float = 1.0,
    clip: bool = True,
) -> torch.Tensor:
    """One reverse step x_t → x_{t−1} from the predicted noise (Ho et al. 2020, Alg. 2); ``noise`` is the
    fresh z (ignored at t = 0). With ``clip`` the result is clipped to [−1, 1] (FISOR's ``clip_sampler``)."""
    inv_sqrt_alpha, eps_coef, sigma = schedule.step_coefs[t]  # 1/√α_t, (1 − α_t)/(√(1 − ᾱ_t)·√α_t), √β_t
    x = inv_sqrt_alpha * x - eps_coef * eps_pred
    if t > 0 and noise is not None:
        x = x + (sigma * temperature) * noise
    return x.clamp(-1.0, 1.0) if clip else x


@torch.no_grad()
def ddpm_sample(
    model: NoisePredictor,
    schedule: DiffusionSchedule,
    obs: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    clip: bool = True,
    repeat_last: int = 0,
) -> torch.Tensor:
    """Draw one action per row of ``obs`` [B, obs_dim] with the full T-step reverse chain → [B, act_dim].

    ``repeat_last`` extra denoising steps at t = 0 (IDQL's M). The result is always clipped to [−1, 1].
    """
    batch, device = obs.shape[0], obs.device
    x = torch.randn(batch, model.act_dim, device=device, dtype=obs.dtype, generator=generator)
    times = [*range(schedule.steps - 1, -1, -1), *([0] * repeat_last)]
    if type(model) is NoisePredictor and not model.training:  # not a subclass: it may override denoise
        denoise = model.eval_denoiser(obs, schedule.steps)  # same numbers, without the per-step module overhead
    else:
        # every row shares the time: embed the T times once, not T × batch rows
        embeddings = model.time(torch.arange(schedule.steps, device=device))

        def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
            return model.denoise(obs, x, embeddings[t : t + 1], generator)

    for t in times:
        eps = denoise(x, t)
        z = torch.randn(x.shape, device=device, dtype=x.dtype, generator=generator) if t > 0 else None
        x = ddpm_step(eps, x, t, schedule, z, temperature, clip)
    return x if clip else x.clamp(-1.0, 1.0)  # ddpm_step already clipped every step's result


__all__ = [
    "DiffusionSchedule",
    "FourierFeatures",
    "LNResNet",
    "LNResNetBlock",
    "NoisePredictor",
    "TimeEmbedding",
    "ddpm_sample",
    "ddpm_step",
    "dropout",
    "noise_prediction_loss",
    "vp_beta_schedule",
]
