"""How long does an algorithm's default run take on this machine, with `preset=cpu` (the default) and with
`preset=paper` (the papers' networks, batch and step count)?

For every registered algorithm: compose `algo=<name>` under each preset exactly as `python -m saferl.run`
does, build it on the PointRobot reference dataset (the default task), time its update with batch sampling
as the training loop runs it (one thread, after warm-up), and print updates/s and the estimated length of a
default run (steps ÷ updates/s; evaluation not included). The ratio column is paper time ÷ cpu time.

    python benchmarks/presets.py [--seconds 4] [--threads 1] [--algos cdt,cpq]
"""

from __future__ import annotations

import argparse
import time


def compose_algo(name: str, preset: str) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from saferl.bench.suite import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"algo={name}", f"preset={preset}"])
    return OmegaConf.to_container(cfg.algo, resolve=True)


def time_default_run(name: str, preset: str, seconds: float) -> dict:
    import torch

    from saferl.algos import AlgoContext, get_algorithm
    from saferl.data import ensure, load
    from saferl.envs import get_task

    task = get_task("point-robot")
    ensure(task.dataset_id, progress=False)
    data = load(task.dataset_id)
    opts = compose_algo(name, preset)
    opts.pop("name")
    cls = get_algorithm(name)
    config = cls.make_config(opts)
    ctx = AlgoContext.for_task(task, data, task.default_cost_limit)
    torch.manual_seed(0)
    algo = cls(config, ctx)
    if algo.expert_data == "required":  # imitation: a few of the dataset's best safe episodes as the expert data
        from saferl.runs.resolve import safe_top_episodes

        train = algo.prepare_imitation(data, safe_top_episodes(data, ctx.cost_limit, 3))
    else:
        train = algo.prepare(data)
    gen = torch.Generator().manual_seed(0)

    def step():
        return algo.update(algo.sample(train, config.batch_size, gen))

    warm_start = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - warm_start
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < max(seconds, warm):
        metrics = step()
        count += 1
    float(next(iter(metrics.values())))  # one sync at the end
    ups = count / (time.perf_counter() - start)
    return {"steps": config.steps, "batch": config.batch_size, "ups": ups, "minutes": config.steps / ups / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--algos", default="")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from saferl.algos import REGISTRY

    names = args.algos.split(",") if args.algos else sorted(REGISTRY)
    print(f"# default run length on PointRobot, {args.threads} thread(s), torch {torch.__version__}")
    print(
        "| algo | preset=cpu: steps, batch | updates/s | est. run "
        "| preset=paper: steps, batch | updates/s | est. run | paper ÷ cpu |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        if name == "hnpg":  # on-policy, online only: no offline default run to time
            continue
        cpu = time_default_run(name, "cpu", args.seconds)
        paper = time_default_run(name, "paper", args.seconds)
        print(
            f"| {name} | {cpu['steps']:,}, {cpu['batch']} | {cpu['ups']:.1f} | {cpu['minutes']:.1f} min "
            f"| {paper['steps']:,}, {paper['batch']} | {paper['ups']:.1f} | {paper['minutes']:.1f} min "
            f"| {paper['minutes'] / cpu['minutes']:.1f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
