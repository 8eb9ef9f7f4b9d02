"""Prompts that more than one layer uses (the CLI, the server and the eval datasets). Standard library only."""

from __future__ import annotations

# The default system prompt for math-style problems: asks for \boxed{}, which thinkscale.answers extracts.
MATH_SYSTEM = "Solve the problem. Think step by step, then write the final answer as \\boxed{ANSWER}."
