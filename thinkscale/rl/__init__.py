"""Training the policy with reinforcement learning from verifiable rewards (``thinkscale train grpo``).

- ``weights``: a catalog GGUF (or a .gguf path) loaded into transformers, dequantized to plain fp32 layers;
- ``rewards``: the rewards TRL's GRPOTrainer calls, built on thinkscale's own answer checkers (and the sandbox);
- ``data``: a shipped or user dataset as chat prompts with their references, split into training and held-out problems;
- ``grpo``: the run (TRL's GRPOTrainer with a peft LoRA adapter, CPU and GPU defaults, checkpoints, resume, the
  reward log and its plot);
- ``export``: the adapter merged into the base weights and written back as a GGUF the embedded backend runs.

Everything here needs the ``train`` extra (torch, transformers, TRL, peft, gguf); importing ``thinkscale`` never
imports it.
"""
