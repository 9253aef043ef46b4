"""Safety filters: barriers that are linear in the action and a QP projection wrapper for gymnasium envs.

from saferl.safety import ControlAffineCBF, SafetyFilter
env = SafetyFilter(gym.make("saferl/PointRobot-v0"), ControlAffineCBF.for_task("point-robot", alpha=5.0))
"""

from saferl.safety.barriers import (
    Barrier,
    BarrierArgumentError,
    BarrierSignatureError,
    ControlAffineCBF,
    CostCriticBarrier,
)
from saferl.safety.filter import (
    ON_INFEASIBLE,
    CorrectsActions,
    InfeasibleConstraintError,
    SafetyFilter,
    SafetyFilterArgumentError,
    SafetyFilterTypeError,
    VectorSafetyFilter,
)
from saferl.safety.qp import (
    SOLVERS,
    AutoSolver,
    CvxpyRebuildSolver,
    CvxpySolver,
    DAQPSolver,
    ExactProjection,
    OSQPSolver,
    QPResult,
    QPSolver,
    QPSolverError,
    make_solver,
    project_halfspace_box,
)
from saferl.safety.velocity import VelocityBarrier, fit_velocity_model

__all__ = [
    "AutoSolver",
    "Barrier",
    "BarrierArgumentError",
    "BarrierSignatureError",
    "ControlAffineCBF",
    "CorrectsActions",
    "CostCriticBarrier",
    "CvxpyRebuildSolver",
    "CvxpySolver",
    "DAQPSolver",
    "ExactProjection",
    "InfeasibleConstraintError",
    "ON_INFEASIBLE",
    "OSQPSolver",
    "QPResult",
    "QPSolver",
    "QPSolverError",
    "SOLVERS",
    "SafetyFilter",
    "SafetyFilterArgumentError",
    "SafetyFilterTypeError",
    "VectorSafetyFilter",
    "VelocityBarrier",
    "fit_velocity_model",
    "make_solver",
    "project_halfspace_box",
]
