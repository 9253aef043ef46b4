"""The Car body of the Run and Circle tasks: our own planar vehicle (MJCF built in `car_xml`, with the task's
markings), on the task rules of `saferl.envs.run_circle`."""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import utils
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from saferl.envs.run_circle import CAR, CIRCLE, RUN, RunCircleTask


def car_xml(task: str) -> str:
    """MJCF of the car plus the task's visual markings (boundary lines, circle zone; no collisions anywhere)."""
    c = CAR
    if task == "run":
        lim = RUN.y_lim
        marks = "".join(
            f'<geom name="bound_{i}" type="box" pos="50 {s * lim} 0.005" size="60 0.03 0.005" rgba="1 .5 0 1"/>'
            for i, s in enumerate((-1, 1))
        )
    else:
        lim = CIRCLE.x_lim
        marks = (
            f'<geom name="circle_zone" type="cylinder" pos="0 0 0.002" size="{CIRCLE.radius} 0.002" '
            f'rgba=".2 .8 .2 .25"/>'
        ) + "".join(
            f'<geom name="bound_{i}" type="box" pos="{s * lim} 0 0.005" size="0.03 12 0.005" rgba="1 .5 0 1"/>'
            for i, s in enumerate((-1, 1))
        )
    return f"""
<mujoco model="saferl_car_{task}">
  <compiler angle="radian"/>
  <option timestep="{c.timestep!r}" integrator="Euler">
    <flag contact="disable" gravity="disable"/>
  </option>
  <visual><global offwidth="640" offheight="480"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".85 .85 .85" rgb2=".7 .7 .75" width="64" height="64"/>
    <material name="grid" texture="grid" texrepeat="1 1" texuniform="true"/>
  </asset>
  <worldbody>
    <light pos="0 0 20" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="120 120 0.1" material="grid"/>
    {marks}
    <body name="car" pos="0 0 {c.height!r}">
      <joint name="slide_x" type="slide" axis="1 0 0" damping="{c.linear_damping!r}"/>
      <joint name="slide_y" type="slide" axis="0 1 0" damping="{c.linear_damping!r}"/>
      <joint name="yaw" type="hinge" axis="0 0 1" damping="{c.yaw_damping!r}"/>
      <inertial pos="0 0 0" mass="{c.mass!r}" diaginertia="{c.yaw_inertia!r} {c.yaw_inertia!r} {c.yaw_inertia!r}"/>
      <geom name="chassis" type="box" size="0.2 0.12 0.05" rgba=".2 .4 .8 1"/>
      <geom name="nose" type="sphere" pos="0.2 0 0.03" size="0.05" rgba=".9 .2 .2 1"/>
      <site name="thrust" pos="0 0 0" size="0.02"/>
    </body>
  </worldbody>
  <actuator>
    <motor name="thrust" site="thrust" gear="{c.thrust_gear!r} 0 0 0 0 0" ctrllimited="true" ctrlrange="-1 1"/>
    <motor name="turn" joint="yaw" gear="{c.turn_gear!r}" ctrllimited="true" ctrlrange="-1 1"/>
  </actuator>
</mujoco>
"""


class CarTaskEnv(RunCircleTask, MujocoEnv, utils.EzPickle):
    """A planar vehicle: slide x, slide y and hinge z joints, thrust along the heading and a turning torque.

    Action (2,) in [−1, 1]: [thrust along the heading (6 N at 1; negative reverses), yaw torque (CCW > 0)].
    Linear damping gives a top speed of 3 m/s (twice the 1.5 m/s limit) with a 0.5 s time constant; the
    top yaw rate is 3 rad/s. Observation (7,) float64: [x, y, v_x, v_y, cos θ, sin θ, θ̇] (world frame).
    """

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 30}
    default_task = "run"

    def __init__(self, task: str | None = None, render_mode: str | None = None, **kwargs: Any):
        task = task or self.default_task
        utils.EzPickle.__init__(self, task, render_mode, **kwargs)
        self._init_task(task, CAR.velocity_limit)
        self._xml = car_xml(task)
        frame_skip = CAR.frame_skip_run if task == "run" else CAR.frame_skip_circle
        self.metadata = {**type(self).metadata, "render_fps": int(round(1.0 / (CAR.timestep * frame_skip)))}
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(7,), dtype=np.float64)
        # MujocoEnv wants an existing file path; the model itself is built from `car_xml` in
        # `_initialize_simulation` (keeps the MJCF inside the package, no data files to ship).
        MujocoEnv.__init__(
            self,
            __file__,
            frame_skip,
            observation_space=obs_space,
            render_mode=render_mode,
            default_camera_config={"distance": 12.0, "elevation": -60.0, "trackbodyid": 1},
            **kwargs,
        )

    def _initialize_simulation(self):
        model = mujoco.MjModel.from_xml_string(self._xml)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)

    def _step_mujoco_simulation(self, ctrl, n_frames):
        # no contacts or force sensors: skip MujocoEnv's mj_rnePostConstraint
        self.data.ctrl[:] = ctrl
        mujoco.mj_step(self.model, self.data, nstep=n_frames)

    def _get_obs(self) -> np.ndarray:
        qpos, qvel = self.data.qpos, self.data.qvel
        return np.array(
            [qpos[0], qpos[1], qvel[0], qvel[1], math.cos(qpos[2]), math.sin(qpos[2]), qvel[2]], dtype=np.float64
        )

    def reset_model(self) -> np.ndarray:
        x, y, yaw = self._sample_start(self.np_random)
        if yaw is None:
            yaw = float(self.np_random.uniform(-CAR.reset_yaw_noise, CAR.reset_yaw_noise))
        x, y, yaw = self._override_pose(x, y, yaw)
        self.set_state(np.array([x, y, yaw]), np.zeros(3))
        return self._get_obs()

    def _get_reset_info(self) -> dict[str, float]:
        return self._task_info({}, at_reset=True)[1]

    def step(self, action):
        action = self._checked_action(action)
        self.do_simulation(np.clip(action, -1.0, 1.0), self.frame_skip)
        reward, info = self._task_info({}, at_reset=False)
        if self.render_mode == "human":
            self.render()
        return self._get_obs(), reward, False, False, info


class CarRunEnv(CarTaskEnv):
    """Car, Run task (BSG SafetyCarRun): reward = progress along +x; cost if |y| > 2 or speed > 1.5 m/s."""

    default_task = "run"


class CarCircleEnv(CarTaskEnv):
    """Car, Circle task (BSG SafetyCarCircle): reward for clockwise motion along r = 7; cost if |x| > 6."""

    default_task = "circle"
