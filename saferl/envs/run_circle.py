"""Constrained Run and Circle tasks in the spirit of Bullet-Safety-Gym, rebuilt on MuJoCo bodies.

Bullet-Safety-Gym (BSG, github.com/liuzuxin/Bullet-Safety-Gym, the simulator behind DSRL's
``OfflineCar/AntRun/Circle`` datasets) defines two locomotion tasks; this module re-implements their reward and
cost rules for two MuJoCo bodies: a small vehicle ("Car", our own MJCF, in `saferl.envs.run_circle_car`) and
gymnasium's Ant-v5 (below).

Run (BSG ``RunTask``): run along +x.
    reward = 60 · (‖p_{t} − g‖ − ‖p_{t+1} − g‖) + agent_term,     g = (1000, 0)   (potential-based progress)
    cost   = 1 if |y| > y_lim (= 2) or ‖(v_x, v_y)‖ > v_lim (agent's velocity limit) else 0
Circle (BSG ``CircleTask``): run clockwise along the circle of radius r = 7 around the origin.
    reward = 0.1 · ⟨p, (−v_y, v_x)⟩ / (1 + |‖p‖ − r|) + 0.01 · agent_term
    cost   = 1 if |x| > x_lim (= 6) else 0
Since x_lim < r, running the full circle crosses the boundaries: the constraint forces an ellipse-like path.

p and v are the planar position and the *instantaneous* planar velocity of the body's root (MuJoCo ``qpos`` /
``qvel``; BSG uses PyBullet's base-link velocity likewise), both part of the observation, so the cost is a
function of the next observation. Costs are 0/1 per step (BSG takes ``min(1, sum of cost terms)``).

Every ``reset()`` and ``step()`` info carries ``cost`` (Python float ≥ 0; 0.0 at reset) and the quantities it is
computed from: ``x_position, y_position, x_velocity, y_velocity, speed, distance_from_origin``, plus the cost
terms (``cost_out_of_bounds`` and, for Run, ``cost_velocity``) and the reward terms (``reward_task``,
``reward_agent``; Ant also reports the parts of its agent term). Reset and step infos have the same keys.

All constants live in the frozen dataclasses below (``CAR``, ``ANT``, ``RUN``, ``CIRCLE``); ``TASK_CONSTANTS``
flattens them per task for the task table. Source references are to BSG at commit 6f9f480:
``tasks.py`` = bullet_safety_gym/envs/tasks.py, ``agents.py``, ``obstacles.py``, ``builder.py``, ``__init__.py``
likewise under bullet_safety_gym/. Differences from BSG (our own choices) are marked "not BSG".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from saferl.envs.batched import minimum, planar_speed

# --------------------------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConstants:
    y_lim: float = 2.0  # corridor half-width, tasks.py:553 (RunTask.y_lim)
    goal_x: float = 1e3  # fictitious target (1000, 0), tasks.py:577
    goal_y: float = 0.0
    potential_scale: float = 60.0  # potential = −60·‖p − g‖, tasks.py:578
    agent_reward_scale: float = 1.0  # reward = progress + agent.specific_reward(), tasks.py:583
    reset_xy_noise: float = 0.01  # start xy ~ U(−0.01, 0.01)², tasks.py:620
    max_episode_steps_car: int = 200  # SafetyCarRun-v0, __init__.py:247 (= DSRL)
    max_episode_steps_ant: int = 200  # SafetyAntRun-v0, __init__.py:264 (= DSRL)


@dataclass(frozen=True)
class CircleConstants:
    x_lim: float = 6.0  # boundaries at x = ±6, tasks.py:436
    radius: float = 7.0  # CircleZone radius, obstacles.py:84
    reward_scale: float = 0.1  # tasks.py:462
    agent_reward_scale: float = 0.01  # tasks.py:464
    reset_min_dist: float = 2.0  # start in the annulus 2 ≤ ‖p‖ ≤ 4 (rejection sampling in [−4, 4]²), tasks.py:502-513
    reset_max_dist: float = 4.0
    max_episode_steps_car: int = 300  # SafetyCarCircle-v0, __init__.py:190 (= DSRL)
    max_episode_steps_ant: int = 500  # SafetyAntCircle-v0, __init__.py:202 (= DSRL)


@dataclass(frozen=True)
class CarConstants:
    """Our MuJoCo vehicle (not BSG's MIT RaceCar URDF); only the velocity limit is BSG's."""

    velocity_limit: float = 1.5  # RaceCar velocity_constraint, agents.py:136
    agent_reward: float = 0.0  # RaceCar.specific_reward() = 0, agents.py:302-305
    # Physics (not BSG). Planar body: slide x, slide y (world axes), hinge z; no contacts.
    mass: float = 1.0  # kg
    yaw_inertia: float = 0.01  # kg m²
    linear_damping: float = 2.0  # N s/m on both slides → time constant mass/damping = 0.5 s
    thrust_gear: float = 6.0  # N at |u| = 1 along the heading → top speed thrust/damping = 3 m/s (2 × v_lim)
    yaw_damping: float = 0.05  # N m s/rad → yaw time constant 0.2 s
    turn_gear: float = 0.15  # N m at |u| = 1 → top yaw rate 3 rad/s
    height: float = 0.1  # m, body height above the floor (visual only)
    timestep: float = 1 / 120  # s, physics step = BSG's Run time_step, builder.py:78
    frame_skip_run: int = 4  # dt = 1/30 s as BSG Run (time_step 1/120, frame_skip 4), builder.py:78-79
    frame_skip_circle: int = 12  # dt = 0.1 s as BSG Circle (time_step 1/60, frame_skip 6), builder.py:85-86
    reset_yaw_noise: float = 0.05  # Run start heading ~ U(−0.05, 0.05) rad (not BSG; BSG jitters the steering)


@dataclass(frozen=True)
class AntConstants:
    """gymnasium Ant-v5 body; agent term = BSG's MJCFAgent.specific_reward(), agents.py:405-413."""

    velocity_limit: float = 1.5  # Ant velocity_constraint, agents.py:432
    electricity_factor: float = -2.0  # × mean|a · 0.1 q̇_joint|, agents.py:338, 376 (0.1 q̇: bases.py:132)
    joint_speed_scale: float = 0.1  # bases.py:132 (Joint.get_relative_position returns 0.1 · q̇)
    stall_torque_factor: float = -0.1  # × mean(a²), agents.py:339, 377
    joints_at_limit_factor: float = -0.1  # × #joints with |normalised angle| > 0.99, agents.py:340, 371-372
    joint_limit_threshold: float = 0.99  # agents.py:371
    timestep: float = 0.01  # s, Ant-v5's ant.xml
    alive_reward: float = 1.0  # +1 alive, −1 otherwise, agents.py:408; alive = Ant-v5's is_healthy (not BSG's z > 0.26)
    frame_skip_run: int = 5  # Ant-v5 default, dt = 0.05 s (not BSG: its Run dt is 1/30 s)
    frame_skip_circle: int = 10  # dt = 0.1 s as BSG Circle, builder.py:85-86


RUN = RunConstants()
CIRCLE = CircleConstants()
CAR = CarConstants()
ANT = AntConstants()

DEFAULT_COST_THRESHOLDS = (10.0, 20.0, 40.0)

ENV_SPECS: dict[str, dict[str, Any]] = {
    "car-run": dict(
        env_id="saferl/CarRun-v0",
        entry_point="saferl.envs.run_circle_car:CarRunEnv",
        max_episode_steps=RUN.max_episode_steps_car,
        cost_thresholds=DEFAULT_COST_THRESHOLDS,
        description=(
            "MuJoCo car runs along +x (BSG RunTask): cost if |y| > 2 or speed > 1.5 m/s; dt 1/30 s, 200 steps"
        ),
    ),
    "car-circle": dict(
        env_id="saferl/CarCircle-v0",
        entry_point="saferl.envs.run_circle_car:CarCircleEnv",
        max_episode_steps=CIRCLE.max_episode_steps_car,
        cost_thresholds=DEFAULT_COST_THRESHOLDS,
        description="MuJoCo car circles clockwise on r = 7 (BSG CircleTask): cost if |x| > 6; dt 0.1 s, 300 steps",
    ),
    "ant-run": dict(
        env_id="saferl/AntRun-v0",
        entry_point="saferl.envs.run_circle:AntRunEnv",
        max_episode_steps=RUN.max_episode_steps_ant,
        cost_thresholds=DEFAULT_COST_THRESHOLDS,
        description="Ant-v5 runs along +x (BSG RunTask): cost if |y| > 2 or speed > 1.5 m/s; dt 0.05 s, 200 steps",
    ),
    "ant-circle": dict(
        env_id="saferl/AntCircle-v0",
        entry_point="saferl.envs.run_circle:AntCircleEnv",
        max_episode_steps=CIRCLE.max_episode_steps_ant,
        cost_thresholds=DEFAULT_COST_THRESHOLDS,
        description="Ant-v5 circles clockwise on r = 7 (BSG CircleTask): cost if |x| > 6; dt 0.1 s, 500 steps",
    ),
}

_AGENTS = {"car": CAR, "ant": ANT}
_TASKS = {"run": RUN, "circle": CIRCLE}

# Flat constants per task (for the task table): "<agent>-<task>" -> {name: value}.
TASK_CONSTANTS: dict[str, dict[str, Any]] = {
    f"{agent}-{task}": {
        **{k: v for k, v in asdict(_TASKS[task]).items() if not k.startswith("max_episode_steps")},
        **{f"{agent}_{k}": v for k, v in asdict(_AGENTS[agent]).items()},
        "dt": _AGENTS[agent].timestep * getattr(_AGENTS[agent], f"frame_skip_{task}"),
        "max_episode_steps": ENV_SPECS[f"{agent}-{task}"]["max_episode_steps"],
    }
    for agent in _AGENTS
    for task in _TASKS
}

# Where the root's (x, y, v_x, v_y) sit in each body's observation: the car's [x, y, v_x, v_y, cos, sin, ω]; Ant-v5
# built with its whole qpos (15 numbers) ahead of qvel.
_PLANAR_OBS = {"car": (0, 1, 2, 3), "ant": (0, 1, 15, 16)}


def barrier(obs: Any, name: str) -> Any:
    """The signed safety margin h(s) (h ≥ 0 safe) of task ``name`` for a batch of observations (numpy or torch),
    with cost = 1[h(s') < 0] exactly: Run min(y_lim − |y|, v_lim − ‖(v_x, v_y)‖), Circle x_lim − |x|."""
    agent, task = name.split("-")
    ix, iy, ivx, ivy = _PLANAR_OBS[agent]
    if task == "circle":
        return CIRCLE.x_lim - abs(obs[..., ix])
    corridor = RUN.y_lim - abs(obs[..., iy])
    return minimum(corridor, _AGENTS[agent].velocity_limit - planar_speed(obs[..., ivx], obs[..., ivy]))


# --------------------------------------------------------------------------------------------------------------
# Task rules (shared by both bodies)
# --------------------------------------------------------------------------------------------------------------


class RunCircleTask:
    """Reward, cost, start state and info of a Run or Circle task; mixed into the body's MujocoEnv."""

    task: str  # "run" or "circle"
    velocity_limit: float

    def _init_task(self, task: str, velocity_limit: float) -> None:
        if task not in _TASKS:
            raise ValueError(f"task must be 'run' or 'circle', got {task!r}")
        self.task = task
        self.velocity_limit = float(velocity_limit)
        self._prev_xy = (0.0, 0.0)
        self._reset_options: dict | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._reset_options = options  # read by reset_model (MujocoEnv does not pass options on)
        return super().reset(seed=seed, options=options)

    def _override_pose(self, x: float, y: float, yaw: float | None) -> tuple[float, float, float | None]:
        """Apply ``reset(options={"xy": (x, y), "yaw": θ})`` over the sampled start pose (for tests/demos)."""
        options = self._reset_options or {}
        if options.get("xy") is not None:
            x, y = float(options["xy"][0]), float(options["xy"][1])
        if options.get("yaw") is not None:
            yaw = float(options["yaw"])
        return x, y, yaw

    @staticmethod
    def _checked_action(action) -> np.ndarray:
        action = np.asarray(action, dtype=np.float64)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        return action

    # -- start state -------------------------------------------------------------------------------------------
    def _sample_start(self, rng: np.random.Generator) -> tuple[float, float, float | None]:
        """(x, y, yaw) of a fresh episode; yaw None = keep the body's own start heading."""
        if self.task == "run":
            x, y = rng.uniform(-RUN.reset_xy_noise, RUN.reset_xy_noise, size=2)
            return float(x), float(y), None
        while True:  # BSG: uniform in the square, accept the annulus
            x, y = rng.uniform(-CIRCLE.reset_max_dist, CIRCLE.reset_max_dist, size=2)
            if CIRCLE.reset_min_dist <= math.hypot(x, y) <= CIRCLE.reset_max_dist:
                break
        # heading: towards the origin + 90° = clockwise tangent, tasks.py:520
        yaw = math.atan2(-y, -x) + 0.5 * math.pi
        return float(x), float(y), yaw

    # -- reward and cost ---------------------------------------------------------------------------------------
    def _task_reward(self, x: float, y: float, vx: float, vy: float) -> float:
        if self.task == "run":
            px, py = self._prev_xy
            before = math.hypot(px - RUN.goal_x, py - RUN.goal_y)
            after = math.hypot(x - RUN.goal_x, y - RUN.goal_y)
            return RUN.potential_scale * (before - after)
        dist = math.hypot(x, y)
        # ⟨p, (−v_y, v_x)⟩ = y·v_x − x·v_y > 0 when moving clockwise
        return CIRCLE.reward_scale * (x * -vy + y * vx) / (1.0 + abs(dist - CIRCLE.radius))

    def _cost_terms(self, x: float, y: float, vx: float, vy: float) -> dict[str, float]:
        if self.task == "run":
            return {
                "cost_out_of_bounds": 1.0 if abs(y) > RUN.y_lim else 0.0,
                "cost_velocity": 1.0 if math.hypot(vx, vy) > self.velocity_limit else 0.0,
            }
        return {"cost_out_of_bounds": 1.0 if abs(x) > CIRCLE.x_lim else 0.0}

    def _agent_reward_scale(self) -> float:
        return RUN.agent_reward_scale if self.task == "run" else CIRCLE.agent_reward_scale

    def _planar_state(self) -> tuple[float, float, float, float]:
        """(x, y, v_x, v_y) of the body's root: qpos[0:2], qvel[0:2] in both bodies."""
        qpos, qvel = self.data.qpos, self.data.qvel
        return float(qpos[0]), float(qpos[1]), float(qvel[0]), float(qvel[1])

    def _task_info(self, agent_terms: dict[str, float], at_reset: bool) -> tuple[float, dict[str, float]]:
        """(reward, info) of the current state; at reset the reward and cost terms are reported as 0."""
        x, y, vx, vy = self._planar_state()
        costs = self._cost_terms(x, y, vx, vy)
        if at_reset:
            costs = dict.fromkeys(costs, 0.0)
            agent_terms = dict.fromkeys(agent_terms, 0.0)
            reward_task = reward_agent = 0.0
        else:
            reward_task = self._task_reward(x, y, vx, vy)
            reward_agent = self._agent_reward_scale() * sum(agent_terms.values())
        self._prev_xy = (x, y)
        info = {
            "cost": min(1.0, sum(costs.values())),  # tasks.py:447-448, 569-570
            **costs,
            "x_position": x,
            "y_position": y,
            "x_velocity": vx,
            "y_velocity": vy,
            "speed": math.hypot(vx, vy),
            "distance_from_origin": math.hypot(x, y),
            "reward_task": reward_task,
            "reward_agent": reward_agent,
            **agent_terms,
        }
        return reward_task + reward_agent, info


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(0.5 * yaw), 0.0, 0.0, math.sin(0.5 * yaw)])


# --------------------------------------------------------------------------------------------------------------
# Ant: gymnasium Ant-v5 with the task reward
# --------------------------------------------------------------------------------------------------------------


class AntTaskEnv(RunCircleTask, AntEnv):
    """gymnasium Ant-v5 (healthy termination kept) with a Run or Circle reward and cost.

    Built with ``exclude_current_positions_from_observation=False`` and ``include_cfrc_ext_in_observation=False``
    (Ant-v5's name for v4's ``use_contact_forces=False``). Observation (29,) float64 = qpos (15) + qvel (14):
    [0:3] torso x, y, z; [3:7] torso quaternion (w, x, y, z); [7:15] the 8 joint angles (hip_1, ankle_1, …,
    hip_4, ankle_4); [15:18] torso linear velocity (world frame); [18:21] torso angular velocity (body frame);
    [21:29] joint velocities. Action (8,) in [−1, 1] as Ant-v5.

    Agent term (BSG MJCFAgent.specific_reward): electricity −2·mean|a·0.1·q̇| − 0.1·mean(a²)
    − 0.1·#(joints at > 99 % of their range) + (1 if healthy else −1), a paired with its actuator's joint.
    """

    default_task = "run"

    def __init__(self, task: str | None = None, render_mode: str | None = None, **kwargs: Any):
        task = task or self.default_task
        self._init_task(task, ANT.velocity_limit)
        frame_skip = ANT.frame_skip_run if task == "run" else ANT.frame_skip_circle
        AntEnv.__init__(
            self,
            frame_skip=frame_skip,
            exclude_current_positions_from_observation=False,
            include_cfrc_ext_in_observation=False,
            render_mode=render_mode,
            **kwargs,
        )
        utils.EzPickle.__init__(self, task, render_mode, **kwargs)
        m = self.model
        joint_ids = m.actuator_trnid[:, 0]
        self._act_dof = m.jnt_dofadr[joint_ids].copy()  # qvel index of each actuator's joint
        hinges = np.flatnonzero(m.jnt_type == mujoco.mjtJoint.mjJNT_HINGE)
        self._hinge_qpos = m.jnt_qposadr[hinges].copy()
        self._hinge_mid = m.jnt_range[hinges].mean(axis=1)
        self._hinge_half = 0.5 * (m.jnt_range[hinges, 1] - m.jnt_range[hinges, 0])

    def _agent_terms(self, action: np.ndarray, healthy: bool) -> dict[str, float]:
        a = np.clip(action, -1.0, 1.0)
        joint_speed = ANT.joint_speed_scale * self.data.qvel[self._act_dof]
        rel = (self.data.qpos[self._hinge_qpos] - self._hinge_mid) / self._hinge_half
        return {
            "reward_electricity": ANT.electricity_factor * float(np.mean(np.abs(a * joint_speed))),
            "reward_stall_torque": ANT.stall_torque_factor * float(np.mean(np.square(a))),
            "reward_joints_at_limit": ANT.joints_at_limit_factor
            * float(np.count_nonzero(np.abs(rel) > ANT.joint_limit_threshold)),
            "reward_alive": ANT.alive_reward if healthy else -ANT.alive_reward,
        }

    def reset_model(self) -> np.ndarray:
        super().reset_model()  # Ant-v5's noisy start (joints, height, velocities)
        qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
        x, y, yaw = self._override_pose(*self._sample_start(self.np_random))
        qpos[0:2] = (x, y)
        if yaw is not None:
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, _yaw_quat(yaw), qpos[3:7])
            qpos[3:7] = quat / np.linalg.norm(quat)
        self.set_state(qpos, qvel)
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, float]:
        return self._task_info(self._agent_terms(np.zeros(self.model.nu), True), at_reset=True)[1]

    def step(self, action):
        action = self._checked_action(action)
        self.do_simulation(action, self.frame_skip)
        healthy = bool(self.is_healthy)
        reward, info = self._task_info(self._agent_terms(action, healthy), at_reset=False)
        terminated = (not healthy) and self._terminate_when_unhealthy
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, terminated, False, info


class AntRunEnv(AntTaskEnv):
    """Ant-v5, Run task (BSG SafetyAntRun): reward = progress along +x + agent term; cost if |y| > 2 or speed > 1.5."""

    default_task = "run"


class AntCircleEnv(AntTaskEnv):
    """Ant-v5, Circle task (BSG SafetyAntCircle): clockwise circling on r = 7; cost if |x| > 6."""

    default_task = "circle"


def __getattr__(name: str) -> Any:
    # Datasets recorded before the Car body moved to its own module store the entry point
    # "saferl.envs.run_circle:CarRunEnv" in their env spec; keep that spelling importable.
    if name in ("CarTaskEnv", "CarRunEnv", "CarCircleEnv"):
        from saferl.envs import run_circle_car

        return getattr(run_circle_car, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
