"""thinkscale: test-time compute scaling for small local models. Don't scale the model, scale the thought."""

from thinkscale.backends import load_backend
from thinkscale.strategies.base import build_strategy, get_strategy
from thinkscale.strategies.best_of_n import BestOfN
from thinkscale.strategies.greedy import Greedy
from thinkscale.strategies.run import Run, execute
from thinkscale.strategies.self_consistency import SelfConsistency
from thinkscale.types import (
    Budget,
    Candidate,
    Completion,
    GenRequest,
    Ledger,
    Message,
    Problem,
    Result,
    Role,
    Sample,
    Scored,
    ScoreRequest,
    Usage,
)

__version__ = "0.1.0"

__all__ = ["BestOfN", "Budget", "Candidate", "Completion", "GenRequest", "Greedy", "Ledger", "Message", "Problem",
           "Result", "Role", "Run", "Sample", "ScoreRequest", "Scored", "SelfConsistency", "Usage", "build_strategy",
           "execute", "get_strategy", "load_backend"]
