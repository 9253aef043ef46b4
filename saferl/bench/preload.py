"""Imported once by the local engine's forkserver (`saferl.bench.engines.LocalEngine`), so that every run's
freshly forked process starts with torch, torch._dynamo (which torch.optim imports on first use: ~3 s),
gymnasium, minari and the algorithms already imported. Only the forkserver and the workers import it."""

import torch._dynamo  # noqa: F401

import saferl.bench.worker  # noqa: F401
import saferl.data.minari_io  # noqa: F401
import saferl.runs  # noqa: F401
