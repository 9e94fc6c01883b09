"""mine_reg: mutual information as a training signal (MINE and relatives), in nats."""

from . import bounds, synthetic
from .bounds import dv, infonce, jsd, nwj, smile
from .club import CLUB, GaussianConditional
from .critics import (
    BoundedCritic,
    ConcatCritic,
    GaussianCritic,
    InputNoise,
    RadialCritic,
    SeparableCritic,
    SumCritic,
    UnitCritic,
    score_pairs,
)
from .estimate import EstimateOptions, EstimateWarning, MIResult, estimate_mi
from .estimator import ESTIMATORS, REGISTRY, EMALogPartition, MIEstimator, MIOutput
from .monitor import MIMonitor
from .per_unit import PerUnitMINE
from .protocol import Terms
from .regularizer import MIRegularizer

__version__ = "0.1.0"

__all__ = [
    "bounds",
    "synthetic",
    "dv",
    "nwj",
    "infonce",
    "smile",
    "jsd",
    "ConcatCritic",
    "SeparableCritic",
    "GaussianCritic",
    "SumCritic",
    "BoundedCritic",
    "InputNoise",
    "RadialCritic",
    "UnitCritic",
    "PerUnitMINE",
    "score_pairs",
    "MIEstimator",
    "MIOutput",
    "EMALogPartition",
    "ESTIMATORS",
    "REGISTRY",
    "Terms",
    "estimate_mi",
    "EstimateOptions",
    "EstimateWarning",
    "MIRegularizer",
    "MIMonitor",
    "CLUB",
    "GaussianConditional",
    "MIResult",
]
