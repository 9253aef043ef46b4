"""Benchmark suites: aggregation on synthetic results with known values, suite expansion and its errors,
reports, and tiny suites end to end on the local process pool and on Ray (idempotent reruns, resume after a
kill, a failing run that does not stop the others), plus `python -m saferl.run -m` on the same launchers."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from saferl.bench import RunRecord, SuiteError, aggregate, expand, parse_suite, write_reports
from saferl.bench.__main__ import compose_bench
from saferl.bench.aggregate import iqm_with_ci
from saferl.envs import get_task
from saferl.evaluation import normalized_cost

# ---------------------------------------------------------------------------------------------------
# synthetic results


def fake_eval(algo: str, env: str, seed: int, cost_limit: float, reward: float, cost: float) -> dict:
    """An eval.json payload (the DESIGN contract) with a given normalized reward and mean cost return."""
    task = get_task(env)
    thresholds = sorted({*task.cost_thresholds, float(cost_limit)})
    raw_reward = task.reward_min + reward * (task.reward_max - task.reward_min)
    norm = {f"{k:g}": normalized_cost(cost, k) for k in thresholds}
    return {
        "algo": algo,
        "env": env,
        "dataset": task.dataset_id,
        "seed": seed,
        "steps": 100,
        "cost_limit": cost_limit,
        "episodes": 10,
        "reward_mean": raw_reward,
        "reward_std": 0.1,
        "cost_mean": cost,
        "cost_std": 1.0,
        "thresholds": thresholds,
        "normalized_reward": task.normalized_reward(raw_reward),
        "normalized_cost": norm,
        "safe": {k: v <= 1 for k, v in norm.items()},
        "wall_time_s": 2.0 + seed,
        "updates_per_s": 50.0 * (seed + 1),
    }


def rec(agent, task, seed, kappa, reward, cost, per_threshold=True) -> RunRecord:
    return RunRecord(agent, task, seed, kappa, per_threshold, fake_eval(agent, task, seed, kappa, reward, cost))


KAPPAS = [5.0, 10.0, 20.0]
TWO_TASKS = {"point-robot": KAPPAS, "boat-robot": KAPPAS}


def test_per_task_statistics_verdicts_and_safe_counts():
    records = []
    # "lag": per threshold; its cost return is 0.8·κ + seed (safe at every κ for seeds 0,1; mean 0.8κ + 0.5)
    for task in TWO_TASKS:
        for k in KAPPAS:
            for seed in (0, 1):
                records.append(rec("lag", task, seed, k, 0.2 + 0.01 * k + 0.1 * seed, 0.8 * k + seed))
    # "free": threshold-free, one run per seed, cost 9 and 11 → mean 10: unsafe at κ=5, safe at 10 and 20
    for task in TWO_TASKS:
        for seed, cost in ((0, 9.0), (1, 11.0)):
            records.append(rec("free", task, seed, 10.0, 0.5 + 0.2 * seed, cost, per_threshold=False))
    board = aggregate(records, TWO_TASKS, bootstrap_reps=0)

    for k in KAPPAS:
        c = board.cell("point-robot", "lag", k)
        rewards = [0.2 + 0.01 * k, 0.3 + 0.01 * k]
        costs = [normalized_cost(0.8 * k, k), normalized_cost(0.8 * k + 1, k)]
        assert c.seeds == 2
        assert c.reward == pytest.approx(np.mean(rewards)) and c.reward_std == pytest.approx(np.std(rewards))
        assert c.cost == pytest.approx(np.mean(costs)) and c.cost_std == pytest.approx(np.std(costs))
        assert c.raw_cost == pytest.approx(0.8 * k + 0.5) and c.safe

        f = board.cell("point-robot", "free", k)
        assert f.seeds == 2 and f.reward == pytest.approx(0.6) and f.raw_cost == pytest.approx(10.0)
        assert f.cost == pytest.approx(10.0 / k) and f.safe == (k >= 10)

    # the task row averages over thresholds; its std is over the seeds' threshold averages
    free = board.cell("point-robot", "free", None)
    assert free.cost == pytest.approx(np.mean([10 / 5, 10 / 10, 10 / 20]))
    assert free.cost_std == pytest.approx(np.std([np.mean([9 / k for k in KAPPAS]), np.mean([11 / k for k in KAPPAS])]))
    assert free.safe is False  # mean normalized cost 1.17 > 1, although it is safe at two of three thresholds
    lag = board.cell("boat-robot", "lag", None)
    assert lag.reward == pytest.approx(np.mean([0.2 + 0.01 * k + 0.1 * s for k in KAPPAS for s in (0, 1)]))
    assert lag.safe

    assert board.agent("lag").safe_tasks == 2 and board.agent("lag").safe_cells == 6
    assert board.agent("free").safe_tasks == 0 and board.agent("free").safe_cells == 4
    assert [a.agent for a in board.agents] == ["lag", "free"]  # safe first, though "free" has more reward
    timing = {t.agent: t for t in board.timing}
    assert timing["free"].runs == 4 and timing["free"].total_train_s == pytest.approx(2 * (2.0 + 3.0))
    assert timing["lag"].updates_per_s == pytest.approx(75.0)


def test_ranking_safe_agents_first_then_iqm():
    records = []
    for task in TWO_TASKS:
        for seed in (0, 1, 2):
            records.append(rec("greedy", task, seed, 10, 0.9, 30.0, per_threshold=False))  # unsafe everywhere
            records.append(rec("careful", task, seed, 10, 0.3, 1.0, per_threshold=False))  # safe everywhere
            records.append(rec("good", task, seed, 10, 0.5, 2.0, per_threshold=False))  # safe, more reward
            # safe on point-robot only
            cost = 2.0 if task == "point-robot" else 25.0
            records.append(rec("half", task, seed, 10, 0.8, cost, per_threshold=False))
    board = aggregate(records, {t: [10.0] for t in TWO_TASKS}, bootstrap_reps=0)
    assert [a.agent for a in board.agents] == ["good", "careful", "half", "greedy"]
    assert [a.rank for a in board.agents] == [1, 2, 3, 4]
    assert [a.safe_tasks for a in board.agents] == [2, 2, 1, 0]


def test_zero_threshold_uses_dsrl_epsilon():
    """κ = 0: normalized cost = (C + 1)/(0 + 1), so only a cost-free agent is safe, and no division by 0."""
    records = [
        rec("clean", "point-robot", 0, 0.0, 0.4, 0.0),
        rec("clean", "point-robot", 1, 0.0, 0.4, 0.0),
        rec("dirty", "point-robot", 0, 0.0, 0.6, 0.5),
        rec("dirty", "point-robot", 1, 0.0, 0.6, 0.0),
    ]
    for r in records:  # eval.json of a κ = 0 run holds the "0" key; drop it to check the recomputation too
        if r.seed == 1:
            r.result["normalized_cost"].pop("0")
    board = aggregate(records, {"point-robot": [0.0]}, bootstrap_reps=0)
    clean, dirty = board.cell("point-robot", "clean", 0.0), board.cell("point-robot", "dirty", 0.0)
    assert clean.cost == pytest.approx(1.0) and clean.safe
    assert dirty.cost == pytest.approx((1.5 + 1.0) / 2) and not dirty.safe
    assert [a.agent for a in board.agents] == ["clean", "dirty"]


def test_iqm_and_confidence_interval_are_rliables():
    from rliable import library as rly
    from rliable import metrics

    # 4 seeds × 2 tasks, per-seed scores 0.0 … 0.7: the IQM drops the 2 lowest and 2 highest → mean(.2,.3,.4,.5)
    scores = {("point-robot", s): 0.1 * s for s in range(4)}
    scores.update({("boat-robot", s): 0.4 + 0.1 * s for s in range(4)})
    records = [rec("a", t, s, 10, v, 1.0, per_threshold=False) for (t, s), v in scores.items()]
    rng = np.random.default_rng(3)
    records += [rec("b", t, s, 10, float(rng.uniform()), 1.0, per_threshold=False) for t in TWO_TASKS for s in range(4)]
    board = aggregate(records, {t: [10.0] for t in TWO_TASKS}, bootstrap_reps=300, seed=7)
    a = board.agent("a")
    assert a.iqm_reward == pytest.approx(0.35) and a.iqm_seeds == 4

    for agent in ("a", "b"):
        matrix = np.array(
            [
                [r.result["normalized_reward"] for r in records if r.agent == agent and r.seed == s and r.task == t]
                for s in range(4)
                for t in ("point-robot", "boat-robot")
            ]
        ).reshape(4, 2)
        np.random.seed(7)  # rliable resamples with numpy's global generator (see iqm_with_ci)
        points, cis = rly.get_interval_estimates(
            {agent: matrix},
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=300,
            random_state=np.random.RandomState(7),
        )
        s = board.agent(agent)
        assert s.iqm_reward == pytest.approx(float(points[agent][0]))
        assert s.iqm_reward_ci == pytest.approx((float(cis[agent][0][0]), float(cis[agent][1][0])))
        assert s.iqm_reward_ci[0] <= s.iqm_reward <= s.iqm_reward_ci[1]
    assert iqm_with_ci(np.arange(8.0).reshape(4, 2), reps=0)[0] == pytest.approx(3.5)


def test_incomplete_agent_has_no_iqm_and_only_complete_seeds_count():
    records = [rec("x", t, s, 10, 0.5, 1.0, per_threshold=False) for t in TWO_TASKS for s in range(3)]
    records = [r for r in records if not (r.task == "boat-robot" and r.seed == 2)]  # seed 2 lacks a task
    records += [rec("only-point", "point-robot", s, 10, 0.5, 1.0, per_threshold=False) for s in range(3)]
    board = aggregate(records, {t: [10.0] for t in TWO_TASKS}, bootstrap_reps=0)
    assert board.agent("x").iqm_seeds == 2 and not math.isnan(board.agent("x").iqm_reward)
    only = board.agent("only-point")
    assert math.isnan(only.iqm_reward) and only.tasks == 1


def test_reports_are_complete_and_self_contained(tmp_path):
    records = []
    for task in TWO_TASKS:
        for k in KAPPAS:
            for seed in (0, 1, 2):
                records.append(rec("lag", task, seed, k, 0.3 + 0.05 * seed, 0.5 * k + seed))
                records.append(rec("greedy", task, seed, k, 0.8, 2 * k + 3))
    board = aggregate(records, TWO_TASKS, suite="synthetic", bootstrap_reps=100, failed={"x on y": "boom"})
    meta = {"command": "python -m saferl.bench report suite=synthetic", "rerun": "python -m saferl.bench suite=s"}
    paths = write_reports(board, tmp_path, meta, records)
    md = paths["markdown"].read_text()
    assert md.index("**lag**") < md.index("_greedy_")  # safe agent ranked first, unsafe in italics
    assert "### point-robot (κ = 5, 10, 20)" in md and "### boat-robot" in md
    assert "x on y: `boom`" in md and "plots/iqm.png" in md and "plots/task-point-robot.png" in md
    page = paths["html"].read_text()
    assert page.count('src="data:image/png;base64,') == 3  # IQM + one scatter per task, inlined
    assert 'src="plots/' not in page and '<tr class="unsafe">' in page and '<tr class="safe">' in page
    for name in ("iqm.png", "task-point-robot.png", "task-boat-robot.png"):
        png = (tmp_path / "plots" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    results = json.loads(paths["results"].read_text())
    assert len(results["runs"]) == len(records)
    assert results["leaderboard"]["agents"][0]["agent"] == "lag"


# ---------------------------------------------------------------------------------------------------
# suites


def suite_from(argv: list[str]):
    return parse_suite(compose_bench(argv).suite)


def test_plateau_compares_the_last_quarter_of_training_with_the_quarter_before():
    from saferl.bench.curves import plateau

    steps = [1000 * i for i in range(1, 9)]
    flat = plateau(steps, [0.1, 0.4, 0.6, 0.70, 0.71, 0.70, 0.72, 0.71], [2.0, 1.5, 1.0, 0.5, 0.5, 0.5, 0.4, 0.5])
    assert flat.plateaued is True and abs(flat.reward_delta) < 0.02
    rising = plateau(steps, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [0.5] * 8)
    assert rising.plateaued is False and rising.reward_delta == pytest.approx(0.2)
    cost_moving = plateau(steps, [0.5] * 8, [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.0, 1.0])
    assert cost_moving.plateaued is False and cost_moving.cost_delta == pytest.approx(-2.0)
    assert plateau(steps[:3], [0.5] * 3, [0.5] * 3).plateaued is None


def test_quick_suite_expands_with_valid_overrides_and_distinct_run_dirs(tmp_path):
    suite = suite_from(["suite=quick"])
    specs = expand(suite, tmp_path, need_data=False)
    expected = sum(
        (len(suite.thresholds(t.name)) if a.per_threshold else 1) * len(suite.seeds)
        for t in suite.tasks
        for a in suite.agents
    )
    assert len(specs) == expected and len({s.run_dir for s in specs}) == expected
    assert {t.name for t in suite.tasks} == {"point-robot", "boat-robot"}
    for s in specs:  # every run has a CPU budget and the run identity sits in its directory name
        assert s.config["steps"] is not None and s.config["seed"] == s.seed
        assert s.run_dir.parent == tmp_path / s.task / s.agent
    # changing a budget gives new run directories; changing only how a run executes does not
    smoke = suite_from(["suite=smoke"])
    base = expand(smoke, tmp_path, need_data=False)
    more = expand(smoke, tmp_path, ("steps=5",), need_data=False)
    threads = expand(smoke, tmp_path, ("threads=2", "progress=true"), need_data=False)
    assert {s.run_dir for s in more}.isdisjoint({s.run_dir for s in base})
    assert [s.run_dir for s in threads] == [s.run_dir for s in base]


@pytest.mark.parametrize(
    ("suite", "names"),
    [
        ("dsrl-velocity", ["halfcheetah-velocity", "walker2d-velocity", "budget=full"]),
        ("run-circle", ["ant-run", "car-circle", "budget=full"]),
    ],
)
def test_suites_needing_what_does_not_exist_fail_clearly(tmp_path, suite, names):
    with pytest.raises(SuiteError) as err:
        expand(suite_from([f"suite={suite}"]), tmp_path)
    for name in names:
        assert name in str(err.value)


def test_o2o_suite_runs_every_agent_offline_then_online(tmp_path):
    specs = expand(suite_from(["suite=o2o"]), tmp_path, need_data=False)
    assert {s.agent for s in specs} == {"ro2o", "famo2o", "calql", "cql", "iql"} and len(specs) == 5 * 2 * 3
    assert all(s.config["online_steps"] == 10_000 and s.config["offline_steps"] == 2000 for s in specs)


def test_task_entries_with_their_own_env_dataset_and_overrides(tmp_path):
    """offline-rl scores several datasets of one task: each entry is a board row with its own label, env and
    dataset; imitation gives each entry its expert dataset as an override."""
    suite = suite_from(["suite=offline-rl"])
    assert suite.score == "d4rl"
    specs = expand(suite, tmp_path, need_data=False)
    rows = {s.task: s for s in specs}
    assert set(rows) == {"halfcheetah-medium", "halfcheetah-medium-replay", "hopper-medium", "hopper-medium-replay"}
    hc = rows["halfcheetah-medium-replay"]
    assert hc.config["env"]["name"] == "halfcheetah-velocity" and hc.config["dataset"].endswith("/medium-replay-v0")
    assert hc.run_dir.parent.parent == tmp_path / "halfcheetah-medium-replay"
    assert len({s.run_dir for s in specs}) == len(specs) == 4 * 9 * 3
    imitation = expand(suite_from(["suite=imitation"]), tmp_path, need_data=False)
    hopper = [s for s in imitation if s.task == "hopper-random" and s.agent == "recoil-5"]
    assert len(hopper) == 3 and all(s.config["expert_dataset"] == "saferl/HopperVelocity/expert-v0" for s in hopper)
    assert all(s.config["expert_episodes"] == 5 for s in hopper)
    with pytest.raises(SuiteError, match="score='nope'.*dsrl or d4rl"):
        suite_from(["suite=smoke", "+suite.score=nope"])
    with pytest.raises(SuiteError, match="unknown key.*env, overrides"):
        suite_from(["suite=smoke", "+suite.tasks.point-robot.nope=1"])


def test_d4rl_scored_board_ranks_by_reward_and_names_a_missing_score():
    """score: d4rl reads eval.json's d4rl_normalized_reward and ranks by reward alone (the cost is reported)."""
    records = []
    for seed in (0, 1, 2):
        for agent, d4rl, cost in (("cheap", 0.4, 0.0), ("fast", 0.9, 40.0)):
            r = rec(agent, "point-robot", seed, 10, 0.5, cost, per_threshold=False)
            r.result["d4rl_normalized_reward"] = d4rl
            records.append(r)
    board = aggregate(records, {"point-robot": [10.0]}, bootstrap_reps=0, score="d4rl")
    assert [a.agent for a in board.agents] == ["fast", "cheap"]  # the unsafe one first: reward alone ranks
    assert board.cell("point-robot", "fast", None).reward == pytest.approx(0.9)
    dsrl = aggregate(records, {"point-robot": [10.0]}, bootstrap_reps=0)
    assert [a.agent for a in dsrl.agents] == ["cheap", "fast"]
    del records[0].result["d4rl_normalized_reward"]
    with pytest.raises(KeyError, match="d4rl_normalized_reward"):
        aggregate(records, {"point-robot": [10.0]}, bootstrap_reps=0, score="d4rl")


def test_missing_dataset_and_bad_override_fail_before_training(tmp_path):
    with pytest.raises(SuiteError, match="no/such-v0.*saferl.collect"):
        expand(suite_from(["suite=smoke", "+suite.tasks.point-robot.dataset=no/such-v0"]), tmp_path)
    with pytest.raises(SuiteError, match="algo.nope"):
        expand(suite_from(["suite=smoke", 'suite.algos.bc_all.overrides=["algo.nope=1"]']), tmp_path)
    with pytest.raises(SuiteError, match="suite/nope"):
        compose_bench(["suite=nope"])
    with pytest.raises(SuiteError, match=r"seeds=\[0, 1\].*suite's seeds"):  # K-seed runs write K run dirs
        expand(suite_from(["suite=smoke", 'suite.algos.bc_all.overrides=["seeds=[0,1]"]']), tmp_path)


# ---------------------------------------------------------------------------------------------------
# end to end (tiny suites)

# an agent whose runs fail before training (eval_episodes=0 is refused when the run starts)
BROKEN = '+suite.algos.broken={algo:bc_all,overrides:["steps=20","algo.hidden=[32,32]","eval_episodes=0"]}'
SMOKE = ["suite=smoke", BROKEN, "bootstrap_reps=200"]


def bench_args(root: Path, *args: str) -> list[str]:
    return [*args, f"runs_root={root / 'runs'}", f"results_dir={root / 'results'}"]


def eval_files(root: Path) -> dict[Path, dict]:
    return {p.parent: json.loads(p.read_text()) for p in sorted(root.rglob("eval.json"))}


def by_name(root: Path) -> dict[str, dict]:
    return {f"{d.parent.name}/{d.name}": r for d, r in eval_files(root).items()}


def without_generated(md: str) -> list[str]:
    return [line for line in md.splitlines() if not line.startswith("Generated ")]


@pytest.fixture(scope="module")
def local_smoke(tmp_path_factory, point_dataset):
    """The smoke suite plus a failing agent, run once through the CLI on the local process pool."""
    root = tmp_path_factory.mktemp("local-smoke")
    proc = run_cli("saferl.bench", *bench_args(root, *SMOKE), cwd=root, timeout=400)
    return root, proc, by_name(root / "runs")


def test_local_suite_end_to_end_rerun_resume_and_a_failing_run(local_smoke, capsys):
    from saferl.bench.__main__ import main

    root, proc, first = local_smoke
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # a failed run is reported in the exit status…
    assert "4 trained, 0 already finished, 2 failed" in out  # …and the others finished
    assert "eval_episodes must be >= 1" in out and "local process pool: 2 worker(s) × 1 thread(s)" in out
    runs = eval_files(root / "runs")
    assert len(runs) == 4
    for run_dir, result in runs.items():  # every run wrote into its own directory, with its own settings
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert result["algo"] == run_dir.parent.name == config["algo"]["name"]
        assert run_dir.name.startswith(f"seed{result['seed']}") and config["seed"] == result["seed"]
        assert json.loads((run_dir / "bench.json").read_text())["state"] == "finished"
    states = [json.loads(p.read_text()) for p in (root / "runs").rglob("bench.json")]
    assert sum(s["state"] == "failed" and "eval_episodes" in s["error"] for s in states) == 2

    # the leaderboard holds the means of the runs' own eval.json files
    results = json.loads((root / "results" / "results.json").read_text())
    by_agent = {a["agent"]: a for a in results["leaderboard"]["agents"]}
    for agent in ("bc_all", "bc_safe"):
        mine = [r for r in runs.values() if r["algo"] == agent]
        assert len(mine) == 2
        assert by_agent[agent]["mean_reward"] == pytest.approx(np.mean([r["normalized_reward"] for r in mine]))
        assert by_agent[agent]["mean_cost"] == pytest.approx(np.mean([r["normalized_cost"]["10"] for r in mine]))
    md = (root / "results" / "leaderboard.md").read_text()
    assert "## Failed runs" in md and "broken on point-robot seed 0" in md
    # learning curves: the seed mean of every run's evaluations at steps 15, 30, 45 and the final one at 60
    assert "## Convergence" in md and (root / "results" / "plots" / "curves-point-robot.png").stat().st_size > 0
    curve = next(c for c in results["curves"] if c["agent"] == "bc_all")
    assert curve["steps"] == [15, 30, 45, 60] and curve["runs"] == 2
    finals = [r["normalized_reward"] for r in runs.values() if r["algo"] == "bc_all"]
    assert curve["reward"][-1] == pytest.approx(np.mean(finals))
    assert curve["plateau"]["plateaued"] is not None
    assert 'src="data:image/png;base64,' in (root / "results" / "leaderboard.html").read_text()

    # rerun: finished runs are skipped and untouched, failed ones are tried again, and a run killed after its
    # last checkpoint (simulated: its eval.json is gone) resumes from that checkpoint with the same result
    killed = next(d for d in runs if d.parent.name == "bc_safe")
    (killed / "eval.json").unlink()
    stamps = {d: (d / "eval.json").stat().st_mtime_ns for d in runs if d != killed}
    assert main(bench_args(root, *SMOKE)) == 1
    out = capsys.readouterr()
    assert "1 trained, 3 already finished, 2 failed" in out.out, out.out + out.err
    assert {d: (d / "eval.json").stat().st_mtime_ns for d in runs if d != killed} == stamps
    assert "resuming from step 60 of 60" in (killed / "bench.log").read_text()
    resumed = json.loads((killed / "eval.json").read_text())
    for key in ("normalized_reward", "reward_mean", "cost_mean", "normalized_cost", "steps"):
        assert resumed[key] == runs[killed][key]

    # report only: rebuilt from the runs, nothing trained; identical but for the "Generated … by …" line
    md = (root / "results" / "leaderboard.md").read_text()
    (root / "results" / "leaderboard.md").unlink()
    assert main(bench_args(root, "report", *SMOKE)) == 0
    assert without_generated((root / "results" / "leaderboard.md").read_text()) == without_generated(md)
    assert {d: (d / "eval.json").stat().st_mtime_ns for d in runs if d != killed} == stamps


def one_run_args(tmp_path: Path, steps: int, *run_options: str) -> list[str]:
    """The smoke suite cut to one bc_all run of ``steps`` updates with a checkpoint every 100."""
    overrides = ",".join(f'"{o}"' for o in (f"steps={steps}", *run_options, "checkpoint_every=100"))
    return bench_args(
        tmp_path,
        "suite=smoke",
        "~suite.algos.bc_safe",
        "suite.seeds=[0]",
        f'suite.algos.bc_all.overrides=[{overrides},"algo.hidden=[32,32]","algo.batch_size=64"]',
        "report=false",
    )


def default_sigint() -> None:
    """SIGINT as a terminal delivers it: a test run from a background job (``cmd &``) inherits it ignored, and a
    Python started so keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_until_checkpoint(tmp_path: Path, args: list[str]) -> tuple[subprocess.Popen, Path]:
    """A runner in a session of its own, once its run has written a checkpoint; and that run's bench.json."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "saferl.bench", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.time() + 240
        while not list((tmp_path / "runs").rglob("checkpoints/last.pt")):
            assert proc.poll() is None and time.time() < deadline, "the run never wrote a checkpoint"
            time.sleep(0.1)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    (state_file,) = (tmp_path / "runs").rglob("bench.json")
    return proc, state_file


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path, point_dataset):
    """Kill -9 the process of a running run (as the OOM killer would): the suite goes on, and the run is
    resubmitted and continues from its last checkpoint."""
    proc, state_file = start_until_checkpoint(tmp_path, one_run_args(tmp_path, 3000))
    try:
        os.kill(json.loads(state_file.read_text())["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_dir = state_file.parent
    assert proc.returncode == 0, out
    assert "retry" in out and "1 trained, 0 already finished, 0 failed" in out
    log = (run_dir / "bench.log").read_text()
    assert "=== attempt 2" in log
    step = int(log.split("resuming from step ")[1].split()[0])
    assert 0 < step < 3000
    assert json.loads((run_dir / "eval.json").read_text())["steps"] == 3000
    steps = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 3000  # no duplicated rows after the resume


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_killed_runner_takes_its_workers_with_it(tmp_path, point_dataset, sig):
    """Signal the runner alone (a scheduler's kill, a session's end; not the terminal's Ctrl-C, which reaches the
    whole process group): its worker must not go on training a run nobody waits for, which a restarted runner
    would train a second time in the same directory. SIGTERM kills the runner outright (the worker notices);
    SIGINT interrupts it (it ends the worker itself). The run is left unfinished, with its checkpoints, for the
    next runner to resume (as after a killed worker: the test above). It is long enough (40,000 tiny updates) not to
    finish while the signal is handled on a loaded machine; 8,000 did once."""
    args = one_run_args(tmp_path, 40_000, "eval_every=0")
    runner, state_file = start_until_checkpoint(tmp_path, args)
    worker = json.loads(state_file.read_text())["pid"]
    try:
        assert pid_alive(worker)
        runner.send_signal(sig)
        runner.communicate(timeout=60)  # an interrupted runner does not wait for the run to finish
        deadline = time.time() + 20
        while pid_alive(worker):
            assert time.time() < deadline, "the worker went on training after its runner was gone"
            time.sleep(0.1)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)
    run_dir = state_file.parent
    assert not (run_dir / "eval.json").exists()
    assert list(run_dir.glob("checkpoints/*.pt"))


def test_run_multirun_uses_the_local_pool_and_survives_a_failing_job(tmp_path, point_dataset):
    proc = run_cli(
        "saferl.run",
        "-m",
        "algo=bc_all,bc_safe",
        "eval_episodes=0,3",
        "steps=30",
        "algo.hidden=[32,32]",
        "algo.batch_size=64",
        "tensorboard=false",
        f"runs_root={tmp_path / 'runs'}",
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "eval_episodes must be >= 1" in out, out
    assert "4 job(s) on local process pool" in out
    runs = eval_files(tmp_path / "runs")
    assert sorted(r["algo"] for r in runs.values()) == ["bc_all", "bc_safe"]
    assert all(r["episodes"] == 3 for r in runs.values())
    assert list((tmp_path / "runs" / "multirun").glob("*/multirun.yaml"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written into the cwd


def test_ray_suite_and_multirun(tmp_path, local_smoke):
    """One local Ray instance (started here, stopped by ray.shutdown): the same suite through `launcher=ray`
    (connecting with RAY_ADDRESS) fails the same runs and gives the same numbers as the local pool, and
    `python -m saferl.run -m hydra/launcher=saferl_ray` runs its jobs there."""
    ray = pytest.importorskip("ray", reason="the ray extra (pip install 'saferl[ray]') is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    old = os.environ.get("RAY_ADDRESS")
    try:
        os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
        on_ray = run_cli(
            "saferl.bench", *bench_args(tmp_path, *SMOKE, "launcher=ray", "report=false"), cwd=tmp_path, timeout=400
        )
        out = on_ray.stdout + on_ray.stderr
        assert on_ray.returncode == 1 and "4 trained, 0 already finished, 2 failed" in out, out
        assert "Ray at" in out
        multirun = run_cli(
            "saferl.run",
            "-m",
            "hydra/launcher=saferl_ray",
            "algo=bc_all,bc_safe",
            "steps=30",
            "eval_episodes=3",
            "algo.hidden=[32,32]",
            "tensorboard=false",
            f"runs_root={tmp_path / 'mr'}",
            cwd=tmp_path,
            timeout=400,
        )
        assert multirun.returncode == 0, multirun.stdout + multirun.stderr
        assert "2 job(s) on Ray at" in multirun.stdout
        assert sorted(r["algo"] for r in eval_files(tmp_path / "mr").values()) == ["bc_all", "bc_safe"]
    finally:
        if old is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = old
        ray.shutdown()
    ray_runs, local_runs = by_name(tmp_path / "runs"), local_smoke[2]
    assert sorted(ray_runs) == sorted(local_runs) and len(ray_runs) == 4
    for name, r in ray_runs.items():  # same seeds, same data: the engine does not change the numbers
        for key in ("normalized_reward", "reward_mean", "cost_mean"):
            assert r[key] == local_runs[name][key]


def test_threshold_conditioned_runs_are_scored_and_plotted_by_their_rollouts_for_each_kappa(tmp_path):
    """A CDT-like run trained once (per_threshold: false) that reports ``by_threshold`` is scored at κ by its
    rollouts for κ, on the board and on its learning curve (the ``eval/k<κ>/*`` columns), not by the rollouts
    for its own cost limit."""
    from saferl.bench.curves import agent_curves, read_run_curve

    task = get_task("point-robot")
    result = fake_eval("cdt", "point-robot", 0, 10.0, 0.5, 8.0)  # the rollouts for κ = 10
    raw = {5.0: (0.2, 4.0), 10.0: (0.5, 8.0), 20.0: (0.9, 30.0)}  # κ -> (normalized reward, cost return)
    result["by_threshold"] = {
        f"{k:g}": {"normalized_reward": r, "cost_mean": c, "normalized_cost": c / k, "safe": c <= k}
        for k, (r, c) in raw.items()
    }
    board = aggregate([RunRecord("cdt", "point-robot", 0, 10.0, False, result)], {"point-robot": KAPPAS})
    cells = {c.threshold: c for c in board.cells}
    assert {k: (c.reward, c.cost) for k, c in cells.items()} == {k: (r, c / k) for k, (r, c) in raw.items()}
    assert [cells[k].safe for k in KAPPAS] == [True, True, False]

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # two periodic evaluations; the one at step 50 has κ = 5's and κ = 20's own rollouts
    header = "step,loss,eval/reward,eval/cost,eval/normalized_reward,eval/normalized_cost,"
    header += (
        "eval/k5/cost,eval/k5/normalized_reward,eval/k5/reward,eval/k20/cost,eval/k20/normalized_reward,eval/k20/reward"
    )
    lines = [header, "25,1.0,,,,,,,,,,", "50,0.5,0,6.0,0.4,0.6,2.0,0.1,0,40.0,0.7,0"]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    curve = read_run_curve(run_dir, result)
    assert curve.steps == (50, 100) and curve.rewards == (0.4, 0.5)
    assert curve.by_threshold == {
        5.0: ((0.1, 0.2), (2.0, 4.0)),
        10.0: ((0.4, 0.5), (6.0, 8.0)),
        20.0: ((0.7, 0.9), (40.0, 30.0)),
    }
    record = RunRecord("cdt", "point-robot", 0, 10.0, False, result, curve)
    (row,) = agent_curves([record], {"point-robot": KAPPAS})
    assert row.reward == pytest.approx([(0.1 + 0.4 + 0.7) / 3, (0.2 + 0.5 + 0.9) / 3])
    assert row.cost == pytest.approx([(2 / 5 + 6 / 10 + 40 / 20) / 3, (4 / 5 + 8 / 10 + 30 / 20) / 3])
    assert task.name == "point-robot"
