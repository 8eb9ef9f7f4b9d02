"""The verifier an ``auto`` policy's ``verifier`` difficulty names, built for replaying a run's stored chains.

Replay (``thinkscale fit-policy``, ``bench/adaptive.py``) runs auto on a backend that serves stored chains and
computes nothing, so the verifier that judges the first chain is built here on the run's own model, loaded only
when a chain's score is not cached yet (``LazyBackend``), behind a ``ScoreCache`` file (``CachedVerifier``): a
refit or a second evaluation needs no model. With ``cross_fit``, a trained ORM fitted on some of the problems
replayed scores each of those with a head fitted without it (``orm_fit.CrossFitORM``): a policy's thresholds are
then fitted on probabilities like the ones auto meets on new problems.

    judge = replay_judge("runs/train-0.5b", "orm", None, cache="runs/orm/judge-scores.sqlite", cross_fit=4,
                         features="runs/orm/features-0.5b.sqlite")
    fit_policy([...], FitOptions(..., verifiers=judge.verifiers, verifier_scores=judge.description))
    judge.close()
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from thinkscale.eval.chain_scores import CachedVerifier, LazyBackend, ScoreCache, backend_kind, verifier_identity
from thinkscale.eval.draws import read_draws
from thinkscale.eval.runner import default_backend_factory
from thinkscale.eval.select import build
from thinkscale.verifiers.base import Verifier
from thinkscale.verifiers.orm import TrainedORM


@dataclass
class Judge:
    """Verifiers keyed as a run resolves them (``execute(..., verifiers=)``), what they are, and what to close."""

    verifiers: dict[tuple[str, str | None], Verifier]
    description: str
    _backend: LazyBackend = field(repr=False)
    _cache: ScoreCache = field(repr=False)
    _features: Any = field(default=None, repr=False)

    @property
    def model_loaded(self) -> bool:
        return self._backend.loaded

    def close(self) -> None:
        self._backend.close()
        self._cache.close()
        if self._features is not None:
            self._features.close()


def replay_judge(run: str | Path, verifier: str, verifier_path: str | None, *, cache: str | Path | None,
                 model: str | None = None, cross_fit: int = 0, features: str | Path | None = None,
                 threads: int | None = None) -> Judge:
    """``verifier`` (with ``verifier_path``) on ``run``'s model, its scores cached in ``cache`` (None: in memory);
    ``cross_fit`` K >= 2: a trained ORM cross-fitted over K folds of its own training problems (its chains'
    features from ``features``, a ``FeatureCache`` file). ValueError for what cannot be built."""
    stored = read_draws(run, model=model)
    spec = str(stored.cfg["backend"])
    factory = default_backend_factory(spec, n_threads=threads)
    backend = LazyBackend(lambda: factory(stored.model), backend_kind(spec), stored.model,
                          stored.identity.get("fingerprint"))
    score_cache = ScoreCache(cache)
    feature_cache = None
    try:
        inner = build(verifier, verifier_path, backend)
        fingerprint = backend.info().fingerprint
        identity = verifier_identity(verifier, verifier_path, inner, fingerprint)
        described = f"{verifier}" + (f" ({verifier_path})" if verifier_path else " (packaged)")
        if cross_fit:
            if not isinstance(inner, TrainedORM):
                raise ValueError(f"--cross-fit refits a trained ORM's head; verifier {verifier!r} is not one")
            if cross_fit < 2:
                raise ValueError(f"--cross-fit needs at least 2 folds, got {cross_fit}")
            from thinkscale.policy.orm_fit import DeferredCrossFit
            from thinkscale.verifiers.orm_train import FeatureCache

            if features is None:
                raise ValueError("--cross-fit needs --features: the feature cache of the ORM's training chains")
            feature_cache = FeatureCache(features)
            # refitted only if a chain's score is not cached: a cached replay needs no model and no features
            crossed = DeferredCrossFit(inner, feature_cache, cross_fit)
            identity = json.dumps(["cross-fit", identity, cross_fit, crossed.fitted_on.seed])
            inner = crossed
            described += (f", cross-fitted over {cross_fit} folds of its {len(crossed.fitted_on.train_problems)} "
                          "training problems (each scored by a head fitted without it)")
        # a Verifier: the protocol's class attributes are properties here (the inner verifier's)
        judged = cast(Verifier, CachedVerifier(inner, identity, score_cache))
    except BaseException:
        score_cache.close()
        if feature_cache is not None:
            feature_cache.close()
        backend.close()
        raise
    return Judge({(verifier, verifier_path): judged}, described, backend, score_cache, feature_cache)
