"""The evaluation harness: shipped datasets, crash-safe budget sweeps into SQLite, metrics, plots and reports.

    thinkscale eval --dataset gsm8k --limit 100 --strategy greedy --strategy self-consistency \\
        --budgets 1,2,4,8,16 --out runs/gsm8k
    thinkscale report runs/gsm8k
"""

from thinkscale.eval.config import SweepConfig, load_sweep_file
from thinkscale.eval.datasets import DATASETS, Dataset, EvalProblem, load_dataset
from thinkscale.eval.runner import SweepSummary, run_sweep

__all__ = ["DATASETS", "Dataset", "EvalProblem", "SweepConfig", "SweepSummary", "load_dataset", "load_sweep_file",
           "run_sweep"]
