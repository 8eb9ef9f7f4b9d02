"""Test-time scaling strategies, one module per algorithm, all on the protocol in ``strategies.base``.

    from thinkscale.strategies import build_strategy, strategy_names
    from thinkscale.strategies.run import execute
    strategy = build_strategy("best-of-n:verifier=pyes,n_samples=8")   # NAME or NAME:KNOB=VALUE,...
    result = execute(strategy, problem, backend, Budget(max_completion_tokens=4096), rng=random.Random(0))

``thinkscale strategies`` lists them with their knobs and papers. Importing this package imports no strategy module;
``load_all()`` (called by every registry lookup) does.
"""

from thinkscale.strategies.base import (
    REGISTRY,
    KnobInfo,
    StrategyInfo,
    budget_knob,
    build_strategy,
    count_knob,
    get_strategy,
    knobs,
    load_all,
    parse_spec,
)


def strategy_names() -> list[str]:
    load_all()
    return sorted(REGISTRY)


__all__ = ["REGISTRY", "KnobInfo", "StrategyInfo", "budget_knob", "build_strategy", "count_knob", "get_strategy",
           "knobs", "load_all", "parse_spec", "strategy_names"]
