"""Screenshots of the viewer's three views (a run's problem table, one job with its search tree, a solve from the page)
taken with the tests' headless Chromium (``tests/viewer/cdp.py``). The browser test calls ``take`` on its
scripted-fake run; the pictures in docs/viewer/ come from a real run::

    .venv/bin/python -m tests.viewer.shots RUN_DIR docs/viewer --model qwen2.5-coder-0.5b \\
        --problem "..." --strategy self-consistency:n_samples=4
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.viewer.cdp import Browser, Page

READY = "document.body.dataset.ready === '1'"


@dataclass(frozen=True)
class SolveForm:
    problem: str
    strategy: str
    reference: str | None = None
    budget_tokens: int = 4096


def open_viewer(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for(READY)


def solve_on_page(page: Page, form: SolveForm, *, timeout: float = 60) -> dict[str, Any]:
    """Fill the solve form and run it; returns what MutationObservers saw while it streamed: ``lead_ms``, how long
    before the run finished its first trace event was listed, and ``events``, how many were listed in the end."""
    page.eval("location.hash = '#/solve'")
    page.wait_for("document.getElementById('s-problem') !== null")
    page.fill("#s-problem", form.problem)
    page.fill("#s-strategy", form.strategy)
    page.fill("#s-budget", str(form.budget_tokens))
    if form.reference is not None:
        page.fill("#s-reference", form.reference)
    page.eval("""(() => { window.__first = null; window.__done = null;
        const status = document.getElementById('s-status'), list = document.getElementById('s-events');
        const now = () => performance.now();
        new MutationObserver(() => { if (window.__first === null && list.children.length) window.__first = now(); })
          .observe(list, {childList: true});
        new MutationObserver(() => { if (status.dataset.done && window.__done === null) window.__done = now(); })
          .observe(status, {attributes: true}); })()""")
    page.click("#s-go")
    page.wait_for("document.getElementById('s-status').dataset.done === '1'", timeout=timeout)
    return {"lead_ms": page.eval("window.__first === null ? -1 : window.__done - window.__first"),
            "events": page.eval("document.querySelectorAll('#s-events li').length")}


def take(page: Page, url: str, out: Path, *, job: int, node: int | None, form: SolveForm | None) -> list[Path]:
    """run.png (the problem table), job.png (job ``job``'s view, node ``node`` of its tree clicked), solve.png (the
    solve form after a streamed run; only when ``form`` is given and the viewer can solve)."""
    out.mkdir(parents=True, exist_ok=True)
    open_viewer(page, url)
    shots = [page.screenshot(out / "run.png")]
    page.eval(f"location.hash = '#/job/{job}'")
    page.wait_for("document.querySelector('#candidates') !== null")
    if node is not None:
        page.click(f"#tree g.node[data-node='{node}']")
        page.wait_for("!document.getElementById('detail').hidden")
    shots.append(page.screenshot(out / "job.png"))
    if form is not None:
        solve_on_page(page, form, timeout=600)
        shots.append(page.screenshot(out / "solve.png"))
    return shots


def main(argv: list[str] | None = None) -> int:
    """Serve RUN_DIR (with --model to solve) in this process and write the three screenshots to OUT."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--job", type=int, help="the job to show (default: the first job of a tree search)")
    ap.add_argument("--node", type=int, help="the tree node to click (default: a pruned one)")
    ap.add_argument("--model")
    ap.add_argument("--backend", default="llamacpp")
    ap.add_argument("--problem", default="A baker makes 3 trays of 12 muffins and sells 20. How many are left?")
    ap.add_argument("--strategy", default="self-consistency:n_samples=4")
    ap.add_argument("--reference", default="16")
    args = ap.parse_args(argv)

    from fastapi.testclient import TestClient

    from tests.viewer.conftest import Served
    from thinkscale.viewer.app import create_viewer_app
    from thinkscale.viewer.cli import solve_backend
    from thinkscale.viewer.sources import load_source

    backend = solve_backend(args.model, args.backend)
    app = create_viewer_app(load_source(args.run_dir), backend=backend)  # type: ignore[arg-type]
    api = TestClient(app, base_url="http://127.0.0.1")
    units = api.get("/api/run").json()["units"]
    job = args.job or next((u["job_id"] for u in units if u["strategy"].startswith(("beam", "dvts", "mcts"))),
                           units[0]["job_id"])
    node = args.node
    if node is None:
        tree = api.get(f"/api/job/{job}").json()["tree"]
        node = next((n["index"] for n in tree["nodes"] if n["status"] == "pruned"), None) if tree else None
    served = Served(app)
    browser = Browser.launch(Path(tempfile.mkdtemp(prefix="viewer-shots-")))
    try:
        page = browser.new_page(width=1400, height=900)
        form = SolveForm(args.problem, args.strategy, args.reference) if backend is not None else None
        shots = take(page, served.url, args.out, job=job, node=node, form=form)
        print(json.dumps({"shots": [str(s) for s in shots], "job": job, "node": node, "errors": page.errors}))
        return 1 if page.errors else 0
    finally:
        browser.close()
        served.close()


if __name__ == "__main__":
    raise SystemExit(main())
