"""bench/pooled_vote.py on a stored run of the scripted fake: a mix with no chains of the second source is the first
source's vote alone, weights from train runs are the sources' chain accuracy, and bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.bench import load_bench
from tests.verifiers.test_orm_fit import run  # noqa: F401  (the stored run fixture)


def test_a_mix_without_the_second_source_is_the_first_alone(run: Path, tmp_path: Path):  # noqa: F811
    out = tmp_path / "pooled.json"
    bench = load_bench("pooled_vote")
    assert bench.main(["--source", f"a={run}", "--source", f"b={run}", "--mix", "4+0,2+2", "--subsets", "50",
                       "--weights-from", f"a={run}", "--weights-from", f"b={run}", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["weights"]["a"] == res["weights"]["b"] == pytest.approx(0.25)  # 1 right chain of 4 per problem
    row = res["by_mix"]["4+0"]
    a_alone = next(x for x in row["alone"] if x["source"] == "a")
    assert row["pooled"]["accuracy"] == pytest.approx(a_alone["accuracy"]) and a_alone["pooled_minus_this"] == 0
    assert {x["source"] for x in res["by_mix"]["2+2"]["alone"]} == {"a", "b"}


@pytest.mark.parametrize(("args", "why"), [
    (["--source", "a=RUN", "--mix", "1"], "at least two --source"),
    (["--source", "a=RUN", "--source", "b=RUN", "--mix", "1+1+1"], "give 2 counts"),
    (["--source", "a=RUN", "--source", "b=RUN", "--mix", "9+0"], "stores 4 chains per problem"),
    (["--source", "a=RUN", "--source", "b=RUN", "--mix", "1+1", "--weights-from", "a=RUN"], "name every source"),
])
def test_bad_input_is_refused(run: Path, args, why, capsys):  # noqa: F811
    assert load_bench("pooled_vote").main([a.replace("RUN", str(run)) for a in args]) == 2
    assert why in capsys.readouterr().err
