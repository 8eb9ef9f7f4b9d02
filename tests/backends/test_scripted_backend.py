"""ScriptedBackend, the fake every strategy test runs on: it must behave like a real backend (n, max_tokens, stop,
logprobs, usage, prefix cache) and fail loudly when a test under-planned its script."""

from __future__ import annotations

import pytest

from thinkscale.backends.base import Capabilities
from thinkscale.backends.scripted import ScriptedBackend, ScriptExhausted, ScriptItem
from thinkscale.types import ConfidenceStop, GenRequest, Message, Usage


def prompt(text: str, **kw) -> GenRequest:
    return GenRequest(prompt=text, **kw)


def test_n_samples_come_from_the_script_in_order():
    backend = ScriptedBackend(["alpha", "beta", "gamma", "delta"])
    (c,) = backend.generate([prompt("q", n=3)])
    assert [s.text for s in c.samples] == ["alpha", "beta", "gamma"]
    assert backend.remaining == 1


def test_max_tokens_cuts_words_and_finishes_with_length():
    """Five words with max_tokens=3: the first three words, 3 tokens, finish "length"."""
    backend = ScriptedBackend(["one two three four five", "one two three"])
    (c,) = backend.generate([prompt("q", n=2, max_tokens=3)])
    assert (c.samples[0].text, c.samples[0].completion_tokens, c.samples[0].finish_reason) == (
        "one two three", 3, "length")
    # Exactly max_tokens words is a natural stop, not a cut.
    assert (c.samples[1].completion_tokens, c.samples[1].finish_reason) == (3, "stop")


def test_stop_string_cuts_at_the_earliest_stop():
    """Stops "\\n" (index 5) and "Done" (index 6): cut at 5, leaving "x = 4" (3 words)."""
    backend = ScriptedBackend(["x = 4\nDone. trailing words"])
    (c,) = backend.generate([prompt("q", stop=("Done", "\n"))])
    s = c.samples[0]
    assert (s.text, s.completion_tokens, s.finish_reason) == ("x = 4", 3, "stop")


def test_stop_is_applied_before_max_tokens():
    """"a b c STOP d e f" with stop "STOP" leaves 3 words, so max_tokens=4 is not reached."""
    (c,) = ScriptedBackend(["a b c STOP d e f"]).generate([prompt("q", stop=("STOP",), max_tokens=4)])
    assert (c.samples[0].text.split(), c.samples[0].finish_reason) == (["a", "b", "c"], "stop")


def test_logprobs_default_one_per_word():
    (c,) = ScriptedBackend(["a b c"]).generate([prompt("q", logprobs=True)])
    assert c.samples[0].logprobs == (-0.1, -0.1, -0.1)


def test_scripted_logprobs_are_cut_with_the_text():
    item = ScriptItem("a b c d", logprobs=(-1.0, -2.0, -3.0, -4.0))
    (c,) = ScriptedBackend([item]).generate([prompt("q", logprobs=True, max_tokens=2)])
    assert c.samples[0].logprobs == (-1.0, -2.0)


def test_no_logprobs_unless_asked():
    (c,) = ScriptedBackend([ScriptItem("a b", logprobs=(-1.0, -2.0))]).generate([prompt("q")])
    assert c.samples[0].logprobs is None


def test_script_item_with_wrong_number_of_logprobs_is_an_error():
    with pytest.raises(ValueError, match="logprobs"):
        ScriptedBackend([ScriptItem("a b c", logprobs=(-1.0,))]).generate([prompt("q", logprobs=True)])


def test_records_every_request_and_counts_generate_calls():
    backend = ScriptedBackend(["1", "2", "3"])
    r1, r2, r3 = prompt("a", n=1), prompt("b", n=1), prompt("c", n=1)
    backend.generate([r1, r2])
    backend.generate([r3])
    assert backend.requests == [r1, r2, r3]
    assert backend.calls == 2


def test_raises_when_a_request_wants_more_samples_than_the_script_holds():
    with pytest.raises(ScriptExhausted):
        ScriptedBackend(["only", "two"]).generate([prompt("q", n=3)])


def test_does_not_cycle_the_script():
    """After the single entry is used, the next call must fail, not quietly replay "first"."""
    backend = ScriptedBackend(["first"])
    backend.generate([prompt("q")])
    with pytest.raises(ScriptExhausted):
        backend.generate([prompt("q")])
    backend.enqueue("second")
    (c,) = backend.generate([prompt("q")])
    assert c.samples[0].text == "second"


def test_usage_counts_whitespace_words():
    """Prompt "a b c d" = 4 words, samples "x y" + "z" = 3 words; nothing cached on the first call.
    FLOPs = 2 x 1000 params x (4 computed prompt + 3 completion) = 14000."""
    backend = ScriptedBackend(["x y", "z"], n_params=1000)
    (c,) = backend.generate([prompt("a b c d", n=2)])
    assert c.usage == Usage(prompt_tokens=4, cached_prompt_tokens=0, completion_tokens=3, calls=1, seconds=0.0,
                            flops=14000.0)
    assert [s.completion_tokens for s in c.samples] == [2, 1]


def test_chat_messages_are_counted_as_rendered():
    """Rendered as "<user> What is 2 plus 2?": 6 words."""
    (c,) = ScriptedBackend(["4"]).generate([GenRequest(messages=(Message("user", "What is 2 plus 2?"),))])
    assert c.usage.prompt_tokens == 6


def test_prompt_extending_an_earlier_one_reports_the_common_prefix_as_cached():
    """First "p q r s": 0 cached. Then "p q r s t u" shares 4 words: 4 cached, 2 computed.
    Then "p q X" shares "p q" with both: 2 cached."""
    backend = ScriptedBackend(["a", "b", "c"], n_params=10)
    first = backend.generate([prompt("p q r s")])[0].usage
    second = backend.generate([prompt("p q r s t u")])[0].usage
    third = backend.generate([prompt("p q X")])[0].usage
    assert (first.prompt_tokens, first.cached_prompt_tokens) == (4, 0)
    assert (second.prompt_tokens, second.cached_prompt_tokens, second.computed_prompt_tokens) == (6, 4, 2)
    assert second.flops == 2.0 * 10 * (2 + 1)
    assert (third.prompt_tokens, third.cached_prompt_tokens) == (3, 2)


def test_repeated_prompt_still_recomputes_its_last_token():
    """Like llama.cpp, the last prompt token is recomputed for its logits: 4 words, at most 3 cached."""
    backend = ScriptedBackend(["a", "b"])
    backend.generate([prompt("p q r s")])
    (c,) = backend.generate([prompt("p q r s")])
    assert (c.usage.cached_prompt_tokens, c.usage.computed_prompt_tokens) == (3, 1)


def test_callable_entries_receive_the_request_and_sample_index():
    seen: list[tuple[GenRequest, int]] = []

    def model(req: GenRequest, j: int) -> str:
        seen.append((req, j))
        return f"sample {j} of {req.n}"

    req = prompt("q", n=3)
    (c,) = ScriptedBackend([model, model, model]).generate([req])
    assert seen == [(req, 0), (req, 1), (req, 2)]
    assert [s.text for s in c.samples] == ["sample 0 of 3", "sample 1 of 3", "sample 2 of 3"]


def test_callable_entries_may_return_script_items():
    (c,) = ScriptedBackend([lambda req, j: ScriptItem("a b", (-0.5, -0.25))]).generate(
        [prompt("q", logprobs=True)])
    assert c.samples[0].logprobs == (-0.5, -0.25)


def test_the_table_fake_continues_a_draw_with_first_sample(tmp_path):
    """``scripted:TABLE`` answers sample j with responses[sample_seed(j) % len]: a continuation (first_sample=3)
    gets exactly the later samples of the whole draw."""
    import json

    from thinkscale.eval.fake import scripted_backend
    from thinkscale.types import GenRequest, Message

    table = tmp_path / "t.json"
    table.write_text(json.dumps({"responses": {"q": [f"answer {i}" for i in range(7)]}}))
    msgs = (Message("user", "q"),)
    whole = scripted_backend(table).generate([GenRequest(messages=msgs, n=6, seed=5)])[0]
    b = scripted_backend(table)
    head, tail = b.generate([GenRequest(messages=msgs, n=3, seed=5),
                             GenRequest(messages=msgs, n=3, seed=5, first_sample=3)])
    assert [s.text for s in head.samples + tail.samples] == [s.text for s in whole.samples]
    assert len({s.text for s in whole.samples}) > 1


def test_confidence_stop_cuts_the_sample_where_the_window_falls():
    """Windows of 2 over (-0.1, -0.1, -2.0, -2.0, -0.1): the window ending at word 3 has mean -1.05 < -1.0, so the
    sample is 3 words long, finishes with low_confidence, and only those 3 words are charged."""
    item = ScriptItem("a b c d e", logprobs=(-0.1, -0.1, -2.0, -2.0, -0.1))
    rule = ConfidenceStop(window=2, min_mean_logprob=-1.0)
    (c,) = ScriptedBackend([item, "x y"]).generate([prompt("q", logprobs=True, n=2, confidence_stop=rule)])
    s, calm = c.samples
    assert (s.text, s.completion_tokens, s.finish_reason, s.logprobs) == ("a b c", 3, "low_confidence",
                                                                           (-0.1, -0.1, -2.0))
    assert (calm.text, calm.finish_reason) == ("x y", "stop")
    assert c.usage.completion_tokens == 5


def test_a_backend_without_the_capability_refuses_a_confidence_stop():
    class Plain(ScriptedBackend):
        capabilities = Capabilities(logprobs=True)

    rule = ConfidenceStop(window=2, min_mean_logprob=-1.0)
    with pytest.raises(NotImplementedError, match="confidence_stop"):
        Plain(["a"]).generate([prompt("q", logprobs=True, confidence_stop=rule)])
