"""saferl's Hydra launchers: ``hydra/launcher=saferl_local`` (process pool) and ``hydra/launcher=saferl_ray``."""
