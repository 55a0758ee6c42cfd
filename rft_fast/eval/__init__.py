"""Evaluation: AutoAttack (pyautoattack), common corruptions (imagecorruptions) and, opt-in, randomized-smoothing
certification (smoothing-L2), written to the results store."""

from rft_fast.eval import corruptions
from rft_fast.eval.autoattack import MODES, NORMS, STUDY_EPS, RobustAccuracy, autoattack
from rft_fast.eval.evaluate import evaluate
from rft_fast.eval.settings import ALL_THREATS, OPTIONAL_THREATS, THREATS, EvalSettings, RunInfo

__all__ = [
    "corruptions",
    "MODES",
    "NORMS",
    "STUDY_EPS",
    "RobustAccuracy",
    "autoattack",
    "THREATS",
    "OPTIONAL_THREATS",
    "ALL_THREATS",
    "EvalSettings",
    "RunInfo",
    "evaluate",
]
