"""Smoke tests on the real smallest model (smollm2-135m): hidden states and P(yes) through llama.cpp."""

from __future__ import annotations

import numpy as np
import pytest

from thinkscale.types import Candidate, GenRequest, Ledger, Message, Problem, Role, ScoreRequest
from thinkscale.verifiers.llm_judge import PYesVerifier
from thinkscale.verifiers.trained_prm import LogisticHead, TrainedPRM

pytestmark = pytest.mark.model


@pytest.fixture(autouse=True)
def _leave_the_shared_backend_clean(llama_backend):
    """The session's backend is shared with other suites: leave no cached sequences behind. (Sampling at T > 0 can
    differ by a token when other cached sequences change how much KV llama.cpp attends over, which makes
    same-seed checks elsewhere depend on what ran before them.)"""
    yield
    llama_backend.clear_cache()

Q = (Message("user", "Tom has 3 apples and buys 4 more. How many apples does he have?"),)
PREFIX = "Tom starts with 3 apples."
LONGER = PREFIX + "\n\nHe buys 4 more, so 3 + 4 = 7."


def test_hidden_states_have_n_embd_repeat_exactly_and_leave_generation_alone(llama_backend):
    b = llama_backend
    greedy = GenRequest(messages=Q, temperature=0.0, max_tokens=12)
    (before,) = b.generate([greedy])
    b.clear_cache()
    counters = dict(b.counters)
    h = b.hidden_states([ScoreRequest(messages=Q, continuation=PREFIX), ScoreRequest(messages=Q, continuation=LONGER),
                         ScoreRequest(messages=Q, continuation=PREFIX)])
    assert h.vectors.shape == (3, b.n_embd) and h.vectors.dtype == np.float32
    assert b.n_embd == 576  # smollm2-135m's hidden size
    assert np.all(np.isfinite(h.vectors)) and np.linalg.norm(h.vectors[0]) > 0
    # same prefix twice: the same vector (the second time its KV is reused and only the last token is computed)
    np.testing.assert_allclose(h.vectors[2], h.vectors[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(h.vectors[0], h.vectors[1])
    assert b.counters["hidden_states"] - counters["hidden_states"] == 3
    u = h.usage
    assert u.calls == 3 and u.completion_tokens == 0
    assert u.cached_prompt_tokens is not None and u.prompt_tokens is not None
    # LONGER reuses PREFIX's tokens and the repeat reuses all but its last token
    assert u.cached_prompt_tokens > u.prompt_tokens / 2
    # from a cold cache the same vector again (no dependence on what was cached)
    b.clear_cache()
    cold = b.hidden_states([ScoreRequest(messages=Q, continuation=PREFIX)])
    np.testing.assert_allclose(cold.vectors[0], h.vectors[0], rtol=1e-4, atol=1e-4)
    # embeddings are off again: greedy generation gives what it gave before
    (after,) = b.generate([greedy])
    assert after.samples[0].text == before.samples[0].text
    assert after.samples[0].completion_tokens == before.samples[0].completion_tokens


def test_pyes_on_the_real_model_charges_the_verifier_and_reuses_the_prompt(llama_backend):
    problem = Problem.from_text(Q[0].content)
    cands = [Candidate(text="3 + 4 = 7. The answer is 7.", answer="7"),
             Candidate(text="3 + 4 = 9. The answer is 9.", answer="9")]
    ledger = Ledger()
    scores = PYesVerifier(llama_backend).score(problem, cands, ledger=ledger)
    assert len(scores) == 2 and all(len(s) == 1 and 0.0 < s[0] < 1.0 for s in scores)
    assert set(ledger.by_role()) == {Role.VERIFIER}
    entries = [u for _, u in ledger.entries]
    assert len(entries) == 4 and ledger.total(Role.VERIFIER).calls == 4
    # the "No" request shares the "Yes" request's whole prompt: it computes only the last prompt token (whose
    # logits give P(No)) and its one answer token
    for no in (entries[1], entries[3]):
        assert no.prompt_tokens is not None and no.cached_prompt_tokens is not None
        assert no.prompt_tokens - no.cached_prompt_tokens == 2


def test_follow_up_judge_reuses_the_generators_kv(llama_backend):
    """The follow-up layout's prefix is the generation prompt plus the sampled solution: after generating, the judge
    computes only the end of the solution turn and the question, not the solution again."""
    problem = Problem.from_text(Q[0].content, system="Answer briefly.")
    (c,) = llama_backend.generate([GenRequest(messages=problem.messages, temperature=0.0, max_tokens=24)])
    text = c.samples[0].text
    ledger = Ledger()
    (score,) = PYesVerifier(llama_backend).score(problem, [Candidate(text=text, answer=None)], ledger=ledger)
    assert 0.0 < score[0] < 1.0
    yes = ledger.entries[0][1]
    assert yes.prompt_tokens is not None and yes.cached_prompt_tokens is not None
    assert yes.cached_prompt_tokens >= (c.usage.prompt_tokens or 0) + (c.samples[0].completion_tokens or 0) - 4
    assert yes.prompt_tokens - yes.cached_prompt_tokens < 40  # the role tags and the question


def test_a_trained_prm_head_scores_real_hidden_states(llama_backend):
    n = llama_backend.n_embd
    head = LogisticHead(np.zeros(n), np.ones(n), np.full(n, 0.01), 0.0)
    prm = TrainedPRM(backend=llama_backend, head=head)
    ledger = Ledger()
    scores = prm.score(Problem.from_text(Q[0].content), [Candidate(text=LONGER, answer=None)], ledger=ledger)
    assert len(scores) == 1 and len(scores[0]) == 2 and all(0.0 < s < 1.0 for s in scores[0])
    assert ledger.total(Role.VERIFIER).calls == 2
