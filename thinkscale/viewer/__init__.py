"""The web viewer: look at what a strategy did (candidates, votes, search trees, code runs, auto's choices), browse a
run's problems, and solve a problem from the page with its trace streamed in.

- ``thinkscale.viewer.app``: ``create_viewer_router`` (the routes, at any prefix) and ``create_viewer_app``.
- ``thinkscale.viewer.sources``: reading a run folder or a trace file (``load_source``).
- ``thinkscale.viewer.model``: the page's model of one run, built from the typed trace events (``build_view``).
- ``thinkscale.viewer.live``: the live solve, streamed as server-sent events.
- ``thinkscale.viewer.cli``: ``thinkscale view``.

Nothing is imported here, so ``thinkscale.cli`` can import the command without loading FastAPI.
"""
