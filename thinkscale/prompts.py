"""Prompts that more than one layer uses (the CLI, the server and the eval datasets). Standard library only."""

from __future__ import annotations

# The default system prompt for math-style problems: asks for \boxed{}, which thinkscale.answers extracts.
MATH_SYSTEM = "Solve the problem. Think step by step, then write the final answer as \\boxed{ANSWER}."
# For training a thinking model (``thinkscale train grpo --system think``) and running it afterwards: the reasoning in
# one <think> block (what budget forcing's think_end="</think>" and the server's hidden reasoning expect), kept short
# so that a small model's chains fit the completion budget of a CPU run.
THINK_SYSTEM = ("Think step by step inside <think> and </think>, briefly. After </think>, write the final answer as "
                "\\boxed{ANSWER}.")
