"""K seeds as one batched model (``seeds=[…]``): each member is the single-seed run, nothing couples them.

Tolerance. A member's update is the single run's arithmetic done by batched kernels (``bmm`` over the member
axis instead of ``mm``), whose float32 sums run in another order: parameters agree to a few ulps after one update,
and training amplifies such differences like any perturbation. On these tiny problems (32-unit nets, batch 64,
100 updates) most algorithms stay far inside the tolerance below; CPQ's and BCQ-Lag's thresholded rules (a Q_c
above/below the limit, a PID multiplier) turn a one-ulp difference into a flipped mask, so they drift further,
as the single run itself does when its initial parameters move by one ulp. The check therefore uses 1e-4 at
100 updates, and 40 updates for those two. A coupling bug (a shared statistic, a shared random stream, a global
clip) gives differences of the order of the parameters themselves within a few updates
(`test_members_are_not_coupled` asserts that neighbours differ by more than 100 × the tolerance).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import compose_run

from saferl.algos import AlgoContext, Algorithm, get_algorithm
from saferl.algos.base import ExpertData
from saferl.data import load
from saferl.envs import get_task
from saferl.nn.members import MemberStack, NotVectorizableError, torch_rng_state
from saferl.runs import SaferlError, load_run, run_experiment
from saferl.runs.resolve import safe_top_episodes
from saferl.runs.trainer import seed_everything

OFFLINE = ["bc_all", "bc_safe", "iql", "td3bc", "cql", "sac_n", "edac", "bcq_lag", "cpq", "coptidice", "cdt", "fdvl"]
OFFLINE += [
    "xql",
    "recoil",
    "fisor",
    "vocbf",
    "calql",
    "sac_ft",
    "ro2o",
    "famo2o",
]  # the last four: their offline phase
CHAOTIC = {"bcq_lag": 40, "cpq": 40}  # updates for the algorithms whose thresholded rules amplify round-off
TOL = 1e-4
TINY = ["algo.batch_size=64", "algo.hidden=[32,32]", "eval_episodes=3", "progress=false", "tensorboard=false"]


def small_config(cls: type[Algorithm], steps: int):
    fields = cls.Config.__dataclass_fields__
    over: dict = {"batch_size": 64, "steps": steps}
    if "expert_batch_size" in fields:  # ReCOIL: the expert half of each batch
        over["expert_batch_size"] = 64
    for name in ("hidden", "actor_hidden", "critic_hidden", "vae_hidden", "bc_hidden", "dyn_hidden"):
        if name in fields:  # a width per layer, or one width (FISOR's actor)
            over[name] = 32 if isinstance(fields[name].default, int) else (32, 32)
    if "embedding_dim" in fields:  # CDT: a short sequence model
        over.update(embedding_dim=32, num_layers=1, seq_len=5, batch_size=16, micro_batch=8)  # two chunks
    return cls.make_config(over)


def build(cls, config, ctx, data, seed: int):
    """Member ``seed`` exactly as `saferl.runs` builds the single run: seeded, built, its data prepared."""
    seed_everything(seed)
    algo = cls(config, ctx)
    if algo.expert_data == ExpertData.REQUIRED:  # imitation: three safe top episodes as the expert data
        train = algo.prepare_imitation(data, safe_top_episodes(data, ctx.cost_limit, 3))
    else:
        train = algo.prepare(data)
    return algo, train, torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", OFFLINE)
def test_member_k_equals_the_single_run_with_seed_k(name, point_dataset, single_thread):
    steps = CHAOTIC.get(name, 100)
    cls = get_algorithm(name)
    config = small_config(cls, steps)
    task = get_task("point-robot")
    data = load(point_dataset)
    ctx = AlgoContext.for_task(task, data, 10.0)
    seeds = [0, 3]

    singles, initial = [], []
    for seed in seeds:
        algo, train, gen = build(cls, config, ctx, data, seed)
        initial.append({n: p.detach().clone() for n, p in algo.named_parameters()})
        for _ in range(steps):
            algo.update(algo.sample(train, config.batch_size, gen))
        singles.append(algo)

    members, trains, gens, states = [], [], [], []
    for seed in seeds:
        algo, train, gen = build(cls, config, ctx, data, seed)
        members.append(algo), trains.append(train), gens.append(gen), states.append(torch_rng_state(False))
    stack = MemberStack(members, states)
    for _ in range(steps):
        metrics = stack.update(
            [m.sample(d, config.batch_size, g) for m, d, g in zip(members, trains, gens, strict=True)]
        )
    stack.sync()

    assert all(v.shape == (len(seeds),) for v in metrics.values())
    for single, member, start in zip(singles, members, initial, strict=True):
        assert member.num_updates == single.num_updates
        params = dict(single.named_parameters())
        moved = max((params[n] - p).abs().max().item() for n, p in start.items())
        assert moved > 100 * TOL, "training did not move the parameters: the comparison would prove nothing"
        for n, p in member.named_parameters():
            torch.testing.assert_close(p, params[n], atol=TOL, rtol=0, msg=f"{name} {n}")
        for n, b in member.named_buffers():
            torch.testing.assert_close(b, dict(single.named_buffers())[n], atol=TOL, rtol=0, msg=f"{name} {n}")


def test_members_are_not_coupled(point_dataset, single_thread):
    """The same seed twice in one stack trains twice the same model; a different neighbour changes nothing."""
    cls = get_algorithm("td3bc")
    config = small_config(cls, 50)
    data = load(point_dataset)
    ctx = AlgoContext.for_task(get_task("point-robot"), data, 10.0)

    def stacked(seeds):
        built, states = [], []
        for seed in seeds:  # each member's global stream as its single run leaves it after building
            built.append(build(cls, config, ctx, data, seed))
            states.append(torch_rng_state(False))
        stack = MemberStack([b[0] for b in built], states)
        for _ in range(50):
            stack.update([a.sample(d, config.batch_size, g) for a, d, g in built])
        stack.sync()
        return [dict(b[0].named_parameters()) for b in built]

    with_1, with_2 = stacked([0, 1]), stacked([0, 2])
    for n, p in with_1[0].items():  # member 0 does not see whether its neighbour is seed 1 or 2
        torch.testing.assert_close(p, with_2[0][n], atol=TOL, rtol=0)
    differ = max((p - with_2[1][n]).abs().max().item() for n, p in with_1[1].items())
    assert differ > 100 * TOL  # … while the neighbours themselves differ


def test_an_update_that_reads_host_values_is_refused_by_name(point_dataset):
    from saferl.algos.bc import BCAll

    class HostReading(BCAll):
        name = "host_reading"

        def update(self, batch):
            metrics = super().update(batch)
            if metrics["actor_loss"].item() > 0:  # data-dependent Python control flow
                pass
            return metrics

    cls = get_algorithm("bc_all")
    data = load(point_dataset)
    ctx = AlgoContext.for_task(get_task("point-robot"), data, 10.0)
    members = [HostReading(small_config(cls, 10), ctx) for _ in range(2)]
    stack = MemberStack(members, [torch_rng_state(False)] * 2)
    with pytest.raises(NotVectorizableError, match="host_reading.*seed=<k>"):
        stack.update([data.sample(64) for _ in members])


def _run_args(*extra: str) -> list[str]:
    return ["algo=iql", "steps=300", "eval_every=150", "log_every=50", "checkpoint_every=100", *TINY, *extra]


def _same_run(a, b) -> None:
    import sys

    sys.path.insert(0, str(__import__("conftest").REPO / "benchmarks"))
    from compare_runs import compare

    problems = compare(a, b, atol=TOL, rtol=1e-3)
    assert not any(problems.values()), problems


def test_seeds_write_one_ordinary_run_directory_per_seed(tmp_path, point_dataset, single_thread):
    results = run_experiment(compose_run(*_run_args("seeds=[0,2]", f"run_dir={tmp_path / 'batched'}")))
    assert [r["seed"] for r in results] == [0, 2] and all(r["batched_seeds"] == 2 for r in results)
    for seed in (0, 2):
        single = run_experiment(compose_run(*_run_args(f"seed={seed}", f"run_dir={tmp_path / f'single{seed}'}")))
        member_dir = tmp_path / "batched" / f"seed{seed}"
        _same_run(member_dir, tmp_path / f"single{seed}")  # config, metrics, evaluations, checkpoints
        member = json.loads((member_dir / "eval.json").read_text())
        assert member["cost_mean"] == single["cost_mean"]
        assert member["reward_mean"] == pytest.approx(single["reward_mean"], abs=1e-3)
        algo, _, cfg, step = load_run(member_dir)  # one member loads alone, as a single run
        assert (cfg["seed"], step, type(algo).__name__) == (seed, 300, "IQL")


def test_a_killed_batched_run_resumes_even_between_two_members_checkpoints(
    tmp_path, point_dataset, single_thread, monkeypatch
):
    from saferl.runs.trainer import Trainer

    original, writes = Trainer.save, []

    def killed_after_member_0_at_200(self, path, step, extra=None):
        if step == 200 and self.s.seed == 1:  # seed 0 wrote step 200, seed 1 still holds step 100
            raise KeyboardInterrupt
        writes.append((self.s.seed, step))
        return original(self, path, step, extra)

    monkeypatch.setattr(Trainer, "save", killed_after_member_0_at_200)
    batched = tmp_path / "batched"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(compose_run(*_run_args("seeds=[0,1]", f"run_dir={batched}")))
    assert writes[-1] == (0, 200)
    monkeypatch.setattr(Trainer, "save", original)

    results = run_experiment(compose_run(*_run_args("seeds=[0,1]", f"run_dir={batched}", "resume=true")))
    assert [r["steps"] for r in results] == [300, 300]
    for seed in (0, 1):
        run_experiment(compose_run(*_run_args(f"seed={seed}", f"run_dir={tmp_path / f'single{seed}'}")))
        _same_run(batched / f"seed{seed}", tmp_path / f"single{seed}")
        rows = [int(r.split(",")[0]) for r in (batched / f"seed{seed}" / "metrics.csv").read_text().splitlines()[1:]]
        assert rows == [50, 100, 150, 200, 250, 300]  # no duplicated or missing rows around the kill


def test_offline_to_online_runs_the_online_phase_member_after_member(tmp_path, point_dataset, single_thread):
    args = ["algo=iql", "steps=100", "online_steps=200", "online_eval_every=100", *TINY]
    run_experiment(compose_run(*args, "seeds=[0,1]", f"run_dir={tmp_path / 'batched'}"))
    for seed in (0, 1):
        run_experiment(compose_run(*args, f"seed={seed}", f"run_dir={tmp_path / f'single{seed}'}"))
        _same_run(tmp_path / "batched" / f"seed{seed}", tmp_path / f"single{seed}")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["seeds=[]"], "names no seed"),
        (["seeds=[1,1]"], "repeats a seed"),
        (["seeds=[0,1]", "compile=true"], "compile=true"),
    ],
)
def test_bad_seeds_say_what_to_do(tmp_path, point_dataset, extra, message):
    with pytest.raises(SaferlError, match=message):
        run_experiment(compose_run(*_run_args(*extra, f"run_dir={tmp_path / 'r'}")))


def test_an_algorithm_that_cannot_batch_its_seeds_is_refused_before_training(tmp_path, point_dataset):
    cfg = compose_run("algo=hnpg", "seeds=[0,1]", "progress=false", f"run_dir={tmp_path / 'r'}")
    with pytest.raises(SaferlError, match="hnpg.*one process per seed"):
        run_experiment(cfg)
    assert not (tmp_path / "r").exists()


def test_member_settings_are_the_single_runs():
    from saferl.runs.seeds import member_settings
    from saferl.runs.settings import RunSettings

    s = RunSettings(algo="iql", env="point-robot", seeds=[4, 5], run_dir="out")
    m = member_settings(s, 5)
    assert (m.seed, m.seeds, m.run_dir) == (5, None, "out/seed5")
    assert dataclasses.replace(m, seed=4, run_dir="out/seed4") == member_settings(s, 4)
