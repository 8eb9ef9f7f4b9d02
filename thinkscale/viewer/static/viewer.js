// thinkscale viewer: draws what the JSON API (thinkscale/viewer/app.py) returns. Hand-written, no dependencies.
// Every piece of text from a run (model output, answers, problem text) goes into the page with textContent or an
// SVG text node, never as HTML: a trace that contains "<script>" shows those characters.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVGNS = "http://www.w3.org/2000/svg";
  const state = { source: null, run: null, filters: { correct: "all", strategy: "all", budget: "all", model: "all", problem: "" } };

  // ------------------------------------------------------------------ building elements (text only)

  function el(tag, props, ...kids) {
    const node = document.createElement(tag);
    applyProps(node, props);
    append(node, kids);
    return node;
  }

  function svg(tag, props, ...kids) {
    const node = document.createElementNS(SVGNS, tag);
    applyProps(node, props);
    append(node, kids);
    return node;
  }

  function applyProps(node, props) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.setAttribute("class", v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, String(v));
    }
  }

  function append(node, kids) {
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.appendChild(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
  }

  function fmt(v, digits) {
    if (v === null || v === undefined) return "—";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return v.toLocaleString("en-US");
      const d = digits === undefined ? (Math.abs(v) >= 100 ? 1 : 3) : digits;
      return v.toFixed(d);
    }
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }

  function badge(correct) {
    if (correct === true) return el("span", { class: "badge right", text: "right" });
    if (correct === false) return el("span", { class: "badge wrong", text: "wrong" });
    return el("span", { class: "badge unknown", text: "not graded" });
  }

  function fact(label, value) { return el("span", {}, label + ": ", el("b", { text: fmt(value) })); }

  function table(headers, rows, opts) {
    const o = opts || {};
    const head = el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : null, text: h.label })));
    const body = el("tbody", {}, rows);
    return el("table", { class: "grid", id: o.id || null }, el("thead", {}, head), body);
  }

  function td(value, cls) { return el("td", { class: cls || null, text: fmt(value) }); }

  // ------------------------------------------------------------------ API, errors, detail panel

  async function api(path) {
    const resp = await fetch(path, { headers: { Accept: "application/json" } });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) throw new Error((data && data.error) || `${path}: HTTP ${resp.status}`);
    return data;
  }

  function banner(message) {
    const b = $("banner");
    b.textContent = message || "";
    b.hidden = !message;
  }

  function showDetail(title, meta, text) {
    $("detail").hidden = false;
    $("detail-title").textContent = title;
    const rows = Object.entries(meta || {}).filter(([, v]) => v !== undefined);
    $("detail-meta").replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmt(v) }))));
    $("detail-text").textContent = text === null || text === undefined ? "" : String(text);
  }

  function setMain(...kids) { $("main").replaceChildren(...kids); }

  // ------------------------------------------------------------------ routing

  async function route() {
    banner("");
    $("detail").hidden = true;
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean);
    try {
      if (parts[0] === "job" && parts[1]) return await showJob(parts[1]);
      if (parts[0] === "compare" && parts[1] && parts[2]) return await showCompare(parts[1], parts[2]);
      if (parts[0] === "solve") return showSolve();
      if (parts[0] === "trace") return await showTrace();
      return await showHome();
    } catch (e) {
      banner(e.message);
      setMain(el("p", { class: "muted", text: "Nothing to show here." }));
    }
  }

  async function showHome() {
    const kind = state.source && state.source.source ? state.source.source.kind : null;
    if (kind === "run") return showRun();
    if (kind === "trace") return showTrace();
    if (state.source && state.source.solve) { location.hash = "#/solve"; return; }
    setMain(el("h2", { text: "Nothing loaded" }),
      el("p", { text: "Start the viewer with a run folder (thinkscale view RUN_DIR), a trace file (thinkscale view TRACE.json), or a model to solve with (--model NAME)." }));
  }

  // ------------------------------------------------------------------ one run: the problem table

  async function showRun() {
    if (!state.run) state.run = await api("api/run");
    const run = state.run;
    const f = state.filters;
    const pick = (id, key, values, labels) => {
      const s = el("select", { id, onchange: (ev) => { f[key] = ev.target.value; drawRows(); } },
        values.map((v, i) => el("option", { value: String(v), text: labels ? labels[i] : String(v) })));
      s.value = String(f[key]);
      return s;
    };
    const text = el("input", { id: "f-problem", type: "search", placeholder: "problem id", value: f.problem,
      oninput: (ev) => { f.problem = ev.target.value; drawRows(); } });
    const filters = el("div", { class: "filters" },
      el("label", {}, "answer ", pick("f-correct", "correct", ["all", "right", "wrong"], ["all", "right", "wrong"])),
      el("label", {}, "strategy ", pick("f-strategy", "strategy", ["all", ...run.strategies])),
      el("label", {}, "budget ", pick("f-budget", "budget", ["all", ...run.budgets])),
      el("label", {}, "model ", pick("f-model", "model", ["all", ...run.models])),
      el("label", {}, "problem ", text));
    const count = el("span", { id: "row-count", class: "muted" });
    const body = el("tbody", { id: "problem-rows" });
    const headers = ["problem", "level", "model", "strategy", "budget", "seed", "answer", "reference", "", "tokens"];
    const grid = el("table", { class: "grid", id: "problems" },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h, class: h === "tokens" || h === "budget" ? "num" : null })))), body);
    const cfg = run.config || {};
    setMain(
      el("h2", { text: `Run ${run.label}` }),
      el("div", { class: "facts" }, fact("dataset", cfg.dataset), fact("problems", run.n_problems),
        fact("models", run.models.join(", ")), fact("strategies", run.strategies.length), fact("budgets", run.budgets.join(", ")),
        fact("units", run.units.length)),
      accuracyTable(run.units),
      el("h3", { text: "Problems" }), filters, count, grid);

    function drawRows() {
      const rows = run.units.filter((u) =>
        (f.correct === "all" || (f.correct === "right") === Boolean(u.answer_correct)) &&
        (f.strategy === "all" || u.strategy === f.strategy) &&
        (f.budget === "all" || String(u.budget) === f.budget) &&
        (f.model === "all" || u.model === f.model) &&
        (!f.problem || String(u.problem_id).includes(f.problem)));
      const shown = rows.slice(0, 1000);
      body.replaceChildren(...shown.map((u) => el("tr", {
        class: "click", "data-job": u.job_id, "data-correct": u.answer_correct ? "1" : "0",
        onclick: () => { location.hash = `#/job/${u.job_id}`; },
      }, td(u.problem_id), td(u.level), td(u.model), td(u.strategy), td(u.budget, "num"), td(u.seed),
        td(u.answer, "answer"), td(u.reference, "answer"), el("td", {}, badge(Boolean(u.answer_correct))),
        td(u.completion_tokens === null ? null : Math.round(u.completion_tokens), "num"))));
      count.textContent = `${rows.length} of ${run.units.length} rows` + (rows.length > shown.length ? ` (first ${shown.length} shown)` : "");
    }
    drawRows();
  }

  function accuracyTable(units) {
    const groups = new Map();
    for (const u of units) {
      const key = `${u.model}\u0000${u.strategy}\u0000${u.budget}`;
      if (!groups.has(key)) groups.set(key, { model: u.model, strategy: u.strategy, budget: u.budget, n: 0, correct: 0, tokens: 0 });
      const g = groups.get(key);
      g.n += 1; g.correct += num(u.correct); g.tokens += num(u.completion_tokens);
    }
    const rows = [...groups.values()].map((g) => el("tr", {}, td(g.model), td(g.strategy), td(g.budget, "num"), td(g.n, "num"),
      td(g.correct / g.n, "num"), td(Math.round(g.tokens / g.n), "num")));
    return el("details", { open: true }, el("summary", { text: "Accuracy by strategy and budget" }),
      table([{ label: "model" }, { label: "strategy" }, { label: "budget", num: true }, { label: "problems", num: true },
        { label: "accuracy", num: true }, { label: "mean tokens", num: true }], rows, { id: "accuracy" }));
  }

  // ------------------------------------------------------------------ one job, a trace, two side by side

  async function showJob(id) {
    const view = await api(`api/job/${encodeURIComponent(id)}`);
    const back = el("a", { href: "#/", text: "← all problems" });
    setMain(back, renderView(view, { compare: true }));
  }

  async function showTrace() {
    const view = await api("api/trace");
    setMain(renderView(view, {}));
  }

  async function showCompare(a, b) {
    const [va, vb] = await Promise.all([api(`api/job/${encodeURIComponent(a)}`), api(`api/job/${encodeURIComponent(b)}`)]);
    setMain(el("a", { href: "#/", text: "← all problems" }), el("h2", { text: `Side by side: problem ${va.problem ? va.problem.id : ""}` }),
      el("div", { class: "compare" }, el("div", { class: "pane", id: "pane-a" }, renderView(va, { compact: true })),
        el("div", { class: "pane", id: "pane-b" }, renderView(vb, { compact: true }))));
  }

  function renderView(view, opts) {
    const o = opts || {};
    const root = el("div", { class: "view", "data-strategy": view.strategy });
    root.append(header(view, o));
    if (view.votes) root.append(section("Vote", voteChart(view.votes)));
    if (view.tree) root.append(section("Search tree", treeView(view.tree, view)));
    if (view.waves) root.append(section("Waves (adaptive-sc / DeepConf)", wavesTable(view.waves)));
    if (view.code_runs) root.append(section("Code runs (SC-TIR)", codeRuns(view.code_runs)));
    if (view.auto) root.append(section("auto: what the policy saw and chose", autoView(view.auto)));
    root.append(section(`Candidates (${view.candidates.length})`, candidatesTable(view)));
    if (view.cost) root.append(section("Cost", costTable(view.cost)));
    root.append(timeline(view.timeline));
    return root;
  }

  function section(title, body) { return el("section", {}, el("h3", { text: title }), body); }

  function header(view, o) {
    const p = view.problem;
    const card = el("div", { class: "card" },
      el("h2", {}, p && p.id ? `Problem ${p.id} · ` : "", view.strategy),
      view.spec && view.spec !== view.strategy ? el("div", { class: "spec", text: `spec: ${view.spec}` }) : null,
      el("div", { class: "facts" }, el("span", {}, "answer: ", el("b", { class: "answer", id: o.compact ? null : "answer", text: fmt(view.answer) }), " ", badge(view.correct)),
        p && p.reference !== undefined ? fact("reference", p.reference) : null,
        view.model ? fact("model", view.model) : null, view.budget !== undefined ? fact("budget", view.budget) : null,
        view.seed !== undefined ? fact("seed", view.seed) : null, fact("stop", view.stop_reason),
        view.stop_detail ? fact("why", view.stop_detail) : null));
    if (view.units && view.units.length > 1) {
      card.append(el("div", { class: "muted", text: "Scored at smaller budgets from the first samples of this run: " +
        view.units.map((u) => `${u.budget}: ${fmt(u.answer)} (${u.answer_correct ? "right" : "wrong"})`).join(", ") }));
    }
    if (p && p.text) card.append(el("pre", { class: "problem-text", text: p.text }));
    if (o.compare && view.others && view.others.length > 1) {
      const options = view.others.filter((u) => u.job_id !== view.job_id);
      const sel = el("select", { id: "compare-with", onchange: (ev) => { if (ev.target.value) location.hash = `#/compare/${view.job_id}/${ev.target.value}`; } },
        el("option", { value: "", text: "compare side by side with…" }),
        options.map((u) => el("option", { value: String(u.job_id), text: `${u.strategy} @${u.budget} (${u.model}, seed ${u.seed}): ${fmt(u.answer)} ${u.answer_correct ? "✓" : "✗"}` })));
      card.append(el("div", { class: "filters" }, sel));
    }
    return card;
  }

  function voteChart(votes) {
    const max = Math.max(...votes.items.map((i) => num(i.value)), 1e-9);
    const grid = el("div", { class: "bars", id: "vote-bars" });
    for (const item of votes.items) {
      const fill = el("div", { class: "fill" + (item.winner ? " winner" : "") + (item.correct ? " right" : "") });
      fill.style.width = `${(100 * num(item.value)) / max}%`;
      grid.append(el("span", { class: "label", text: item.answer }), el("div", { class: "track" }, fill),
        el("span", { class: "value", text: fmt(item.value) + (item.winner ? "  ← chosen" : "") + (item.correct ? "  ✓ right" : "") }));
    }
    return el("div", {}, el("div", { class: "muted", text: votes.kind === "count" ? "votes per answer" : "verifier score per answer" }), grid);
  }

  function candidatesTable(view) {
    const c0 = view.candidates;
    const hasWave = c0.some((c) => c.wave !== undefined);
    const headers = [{ label: "#" }, { label: "answer" }, { label: "" }, { label: "tokens", num: true }, { label: "finish" },
      { label: "scores" }, { label: "chosen" }];
    if (hasWave) headers.push({ label: "wave" }, { label: "confidence", num: true }, { label: "kept" });
    const rows = c0.map((c) => {
      const tr = el("tr", { class: "click" + (c.chosen ? " chosen" : ""), "data-index": c.index, onclick: () => candidateDetail(c, view) },
        td(c.index), td(c.answer, "answer"), el("td", {}, c.correct === null ? "" : badge(c.correct)), td(c.completion_tokens, "num"),
        td(c.finish_reason + (c.stopped_early ? " (stopped early)" : "")), td(c.scores.map((s) => fmt(s, 3)).join(" ")), td(c.chosen ? "✔" : ""));
      if (hasWave) tr.append(td(c.wave), td(c.confidence, "num"), td(c.kept));
      return tr;
    });
    const note = view.texts_kept ? null : el("p", { class: "muted", text: "This source keeps no candidate texts (a --trace file); the search tree's nodes keep their steps. `thinkscale solve --json --show-reasoning` output keeps them." });
    return el("div", {}, note, table(headers, rows, { id: "candidates" }));
  }

  function candidateDetail(c, view) {
    showDetail(`candidate ${c.index}`, { answer: c.answer, correct: c.correct, "completion tokens": c.completion_tokens,
      finish: c.finish_reason, scores: c.scores, chosen: c.chosen, wave: c.wave, confidence: c.confidence, kept: c.kept },
    c.text === null || c.text === undefined ? "(no text kept for this candidate)" : c.text);
  }

  // ------------------------------------------------------------------ the search tree

  function treeView(tree, view) {
    const dx = 30, dy = 64, pad = 26;
    const width = Math.max(tree.width * dx + 2 * pad, 240);
    const height = tree.depth * dy + 2 * pad + 14;
    const pos = new Map(tree.nodes.map((n) => [n.index, [pad + n.x * dx, pad + n.y * dy]]));
    const byIndex = new Map(tree.nodes.map((n) => [n.index, n]));
    const picture = svg("svg", { class: "tree", id: "tree", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": `search tree of ${tree.nodes.length} nodes` });
    for (const n of tree.nodes) {
      if (n.parent === null || !pos.has(n.parent)) continue;
      const [x1, y1] = pos.get(n.parent), [x2, y2] = pos.get(n.index);
      const onPath = n.on_chosen_path && byIndex.get(n.parent).on_chosen_path;
      picture.append(svg("line", { class: "edge" + (onPath ? " on-path" : ""), x1, y1, x2, y2 }));
    }
    for (const n of tree.nodes) {
      const [x, y] = pos.get(n.index);
      const cls = `node status-${n.status}` + (n.on_chosen_path ? " on-path" : "") + (n.chosen ? " chosen" : "") +
        (n.correct === true ? " right" : n.correct === false ? " wrong" : "");
      const label = n.visits !== null && n.visits !== undefined ? `n${n.visits}` : n.score === null ? "" : fmt(n.score, 2);
      const g = svg("g", { class: cls, "data-node": n.index, tabindex: 0,
        onclick: () => nodeDetail(n, picture, g), onkeydown: (ev) => { if (ev.key === "Enter") nodeDetail(n, picture, g); } },
      svg("title", { text: `node ${n.index} (${n.status})${n.answer ? " answer " + n.answer : ""}\n${n.step || ""}` }),
      n.correct === true ? svg("circle", { class: "ring", cx: x, cy: y, r: 12 }) : null,
      svg("circle", { class: "dot", cx: x, cy: y, r: 8 }),
      svg("text", { x, y: y + 22, "text-anchor": "middle", text: label }));
      picture.append(g);
    }
    const counts = Object.entries(tree.counts).map(([k, v]) => `${v} ${k}`).join(", ");
    const legend = el("div", { class: "legend" },
      el("span", {}, el("i", { class: "kept" }), "kept"), el("span", {}, el("i", { class: "pruned" }), "pruned"),
      el("span", {}, el("i", { class: "finished" }), "finished"), el("span", {}, el("i", { class: "duplicate" }), "duplicate (not scored)"),
      tree.algorithm === "mcts" ? el("span", {}, el("i", { class: "rollout" }), "rollout") : null,
      el("span", {}, el("i", { class: "path" }), "chosen path"), el("span", {}, el("i", { class: "right" }), "right answer"));
    const what = tree.algorithm === "mcts" ? "labels: visits" : `labels: ${tree.aggregation} step score`;
    return el("div", {}, el("div", { class: "muted", id: "tree-summary", text: `${tree.algorithm}: ${tree.nodes.length} nodes (${counts}); ${what}; click a node for its text` }),
      legend, el("div", { class: "tree-wrap" }, picture));
  }

  function nodeDetail(n, picture, g) {
    for (const s of picture.querySelectorAll("g.node.selected")) s.classList.remove("selected");
    g.classList.add("selected");
    showDetail(`node ${n.index}` + (n.index > 0 ? ` (candidate ${n.index - 1})` : " (root)"), {
      status: n.status, depth: n.y, kind: n.kind, terminal: n.terminal, answer: n.answer, correct: n.correct,
      score: n.score, "step scores": n.step_scores, visits: n.visits, value: n.value, "completion tokens": n.completion_tokens,
      finish: n.finish_reason, "on chosen path": n.on_chosen_path,
    }, n.text);
  }

  // ------------------------------------------------------------------ waves, code runs, auto, cost, timeline

  function wavesTable(waves) {
    const rows = waves.map((w) => el("tr", {}, td(w.wave), td(w.n, "num"), td(w.first_sample, "num"), td(w.P, "num"),
      td(w.threshold, "num"), td(w.stopped, "num"), td(w.kept, "num"), td(w.online_stop), td(w.counts)));
    return table([{ label: "wave" }, { label: "chains", num: true }, { label: "first sample", num: true }, { label: "P(leader stays)", num: true },
      { label: "confidence threshold", num: true }, { label: "stopped early", num: true }, { label: "kept", num: true }, { label: "online stop" }, { label: "vote so far" }], rows, { id: "waves" });
  }

  function codeRuns(cr) {
    const box = el("div", { id: "code-runs" });
    if (cr.ends) box.append(el("p", { class: "muted", text: "paths ended: " + cr.ends.map((e, i) => `${i}: ${e} (${cr.code_runs[i]} code runs)`).join(", ") }));
    for (const r of cr.runs) {
      const status = r.timed_out ? "timed out" : r.exception ? r.exception : `exit ${fmt(r.exit_code)}`;
      box.append(el("div", { class: "card code-run-card" },
        el("div", { class: "facts" }, fact("path", r.path), fact("round", r.round), fact("result", status), fact("seconds", r.wall_seconds),
          r.killed_reason ? fact("killed", r.killed_reason) : null),
        el("div", { class: "code-run" }, el("div", {}, el("div", { class: "muted", text: "code" }), el("pre", { class: "code", text: r.code || "" })),
          el("div", {}, el("div", { class: "muted", text: "sandbox output" }), el("pre", { class: "output", text: r.stdout || "" })))));
    }
    return box;
  }

  function autoView(a) {
    const box = el("div", { id: "auto" });
    const facts = el("div", { class: "facts" }, fact("difficulty", a.score_kind ? `${a.score_kind} = ${fmt(a.score)}` : null),
      fact("bin", a.bin), fact("bins", a.bins.join(" | ")), fact("edges", a.edges.join(", ")), fact("action", a.action),
      a.stop ? fact("stop", a.stop.reason + (a.stop.detail ? ` (${a.stop.detail})` : "")) : null);
    box.append(facts);
    if (a.fitted && a.fitted.why) box.append(el("p", { class: "muted", text: a.fitted.why }));
    if (a.features) {
      box.append(table([{ label: "feature" }, { label: "value" }],
        Object.entries(a.features).map(([k, v]) => el("tr", {}, td(k), td(v))), { id: "auto-features" }));
    }
    if (a.checks.length) {
      box.append(el("h3", { text: "stopping checks" }), table([{ label: "samples", num: true }, { label: "P", num: true }, { label: "threshold", num: true }, { label: "votes" }],
        a.checks.map((c) => el("tr", {}, td(c.samples, "num"), td(c.P, "num"), td(c.threshold, "num"), td(c.counts)))));
    }
    if (a.policy) box.append(el("p", { class: "muted", text: `policy: ${fmt(a.policy.policy)}; fitted on ${fmt(a.policy.fitted_on)}` }));
    if (a.delegate) box.append(el("h3", { text: `delegated to ${a.delegate.spec}` }), el("div", { class: "nested" }, renderView(a.delegate, { compact: true })));
    return box;
  }

  function costTable(cost) {
    const rows = cost.rows.map((r) => el("tr", {}, td(r.role), td(r.prompt_tokens, "num"), td(r.cached_prompt_tokens, "num"), td(r.completion_tokens, "num"),
      td(r.calls, "num"), td(r.seconds, "num"), td(r.flops === null ? null : Number(r.flops).toExponential(2), "num")));
    return el("div", {}, table([{ label: "role" }, { label: "prompt tokens", num: true }, { label: "cached", num: true }, { label: "completion tokens", num: true },
      { label: "calls", num: true }, { label: "backend seconds", num: true }, { label: "FLOPs", num: true }], rows, { id: "cost" }),
    cost.wall_seconds !== null && cost.wall_seconds !== undefined ? el("p", { class: "muted", text: `wall time ${fmt(cost.wall_seconds, 2)} s` }) : null);
  }

  function eventItem(item) {
    return el("li", { class: "ev", "data-kind": item.kind, onclick: () => showDetail(`event ${item.i}: ${item.kind}`, {}, JSON.stringify(item.event, null, 2)) },
      el("span", { class: "kind", text: item.kind }), " ", item.summary);
  }

  function timeline(items) {
    return el("details", { class: "timeline" }, el("summary", { text: `Trace: ${items.length} events` }), el("ol", { class: "events" }, items.map(eventItem)));
  }

  // ------------------------------------------------------------------ solving from the page

  function showSolve() {
    const src = state.source || {};
    if (!src.solve) {
      setMain(el("h2", { text: "Solve" }), el("p", { id: "solve-off", text: "Solving from the page is off: start the viewer with a model (thinkscale view --model NAME), or use the /ui page of thinkscale serve." }));
      return;
    }
    const names = el("datalist", { id: "strategy-names" }, (src.strategies || []).map((s) => el("option", { value: s.name, text: s.summary })));
    const field = (label, input) => [el("label", { for: input.id, text: label }), input];
    const form = el("form", { class: "solve-form", id: "solve-form" },
      field("problem", el("textarea", { id: "s-problem", required: true, placeholder: "What is 6 times 7?" })),
      field("strategy", el("input", { id: "s-strategy", list: "strategy-names", value: "self-consistency:n_samples=4" })),
      field("token budget", el("input", { id: "s-budget", type: "number", min: 1, max: src.limits.max_completion_tokens, value: Math.min(4096, src.limits.max_completion_tokens) })),
      field("call budget", el("input", { id: "s-calls", type: "number", min: 1, placeholder: "no limit" })),
      field("seed", el("input", { id: "s-seed", type: "number", min: 0, value: 0 })),
      field("reference (optional)", el("input", { id: "s-reference", placeholder: "the right answer, to grade" })),
      field("answer type", el("select", { id: "s-task" }, ["numeric", "integer", "math", "multiple_choice", "game24"].map((t) => el("option", { value: t, text: t })))),
      el("span"), el("button", { class: "primary", id: "s-go", type: "submit", text: "Solve" }), names);
    const status = el("div", { class: "status-line", id: "s-status" });
    const live = el("div", { id: "s-live" });
    const events = el("ol", { class: "events", id: "s-events" });
    const result = el("div", { id: "s-result" });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); solve(form, status, live, events, result); });
    setMain(el("h2", { text: "Solve a problem" }), form, status, live, el("h3", { text: "Trace, as it runs" }), events, result);
  }

  async function solve(form, status, live, events, result) {
    const val = (id) => $(id).value.trim();
    const body = { problem: $("s-problem").value, strategy: val("s-strategy"), budget_tokens: val("s-budget") || null,
      budget_calls: val("s-calls") || null, seed: val("s-seed") || 0, reference: val("s-reference") || null, task: val("s-task") };
    const go = $("s-go");
    go.disabled = true;
    banner("");
    events.replaceChildren();
    result.replaceChildren();
    live.replaceChildren();
    status.textContent = "starting…";
    let n = 0;
    try {
      const resp = await fetch("api/solve", { method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" }, body: JSON.stringify(body) });
      if (!resp.ok) {
        let data = null;
        try { data = await resp.json(); } catch (e) { data = null; }
        throw new Error((data && data.error) || `HTTP ${resp.status}`);
      }
      await readEvents(resp, (kind, data) => {
        if (kind === "start") status.textContent = `running ${data.spec}…`;
        else if (kind === "trace") {
          n += 1;
          events.append(eventItem(data));
          status.textContent = `running ${body.strategy}: ${n} events`;
          const counts = data.event.counts;
          if (counts && typeof counts === "object") {
            const items = Object.entries(counts).map(([answer, value]) => ({ answer, value, winner: false, correct: null }));
            items.sort((a, b) => b.value - a.value);
            live.replaceChildren(voteChart({ kind: "count", items }));
          }
        } else if (kind === "result") {
          status.textContent = `done: ${n} events, answer ${fmt(data.answer)}`;
          status.setAttribute("data-done", "1");
          live.replaceChildren();
          result.replaceChildren(renderView(data, {}));
        } else if (kind === "error") {
          status.textContent = "failed";
          status.setAttribute("data-done", "1");
          banner(data.error);
        }
      });
    } catch (e) {
      status.textContent = "failed";
      status.setAttribute("data-done", "1");
      banner(e.message);
    } finally {
      go.disabled = false;
    }
  }

  async function readEvents(resp, onEvent) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const chunk = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let kind = "message", data = "";
        for (const line of chunk.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        onEvent(kind, data ? JSON.parse(data) : null);
      }
    }
  }

  // ------------------------------------------------------------------ start

  async function start() {
    $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
    try {
      state.source = await api("api/source");
    } catch (e) {
      banner(e.message);
      return;
    }
    const src = state.source.source;
    $("source-label").textContent = src ? `${src.kind}: ${src.path}` : "nothing loaded";
    if (!state.source.solve) $("nav-solve").classList.add("off");
    if (!src || src.kind !== "run") $("nav-home").textContent = src ? "Trace" : "Home";
    window.addEventListener("hashchange", route);
    await route();
    document.body.setAttribute("data-ready", "1");
  }

  document.addEventListener("DOMContentLoaded", start);
})();
