"""Evaluation: AutoAttack (pyautoattack) and common corruptions (imagecorruptions), written to the results store."""
from rft_fast.eval import corruptions
from rft_fast.eval.autoattack import MODES, NORMS, STUDY_EPS, RobustAccuracy, autoattack
from rft_fast.eval.evaluate import THREATS, EvalSettings, RunInfo, evaluate

__all__ = ["corruptions", "MODES", "NORMS", "STUDY_EPS", "RobustAccuracy", "autoattack", "THREATS", "EvalSettings", "RunInfo", "evaluate"]
