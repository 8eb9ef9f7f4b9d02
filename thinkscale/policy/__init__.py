"""The compute-optimal ``auto`` controller's parts: difficulty features and bins (``features``), the policy file
(``model``) and the fitter that makes one from eval runs (``fit``). The controller itself is
``thinkscale.strategies.auto``."""

from thinkscale.policy.features import DifficultyScore, WaveFeatures, difficulty_score, fit_edges, wave_features
from thinkscale.policy.model import Policy, PolicyError, load_policy

__all__ = ["DifficultyScore", "Policy", "PolicyError", "WaveFeatures", "difficulty_score", "fit_edges",
           "load_policy", "wave_features"]
