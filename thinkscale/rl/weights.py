"""A GGUF model (catalog name or path) in transformers, for training: there is no model hub, so the weights are the
very file the embedded backend runs, dequantized by transformers' GGUF loader into plain fp32 (or bf16) layers."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAIN_PACKAGES = ("torch", "transformers", "trl", "peft", "gguf", "datasets")


class TrainSetupError(RuntimeError):
    """Training cannot start: a missing extra, a bad model file, an output folder in the way. One line, what to do."""


def require_train_extra() -> None:
    """Fail with the install command when the ``train`` extra is missing (imported lazily, never by ``thinkscale``)."""
    missing = [p for p in TRAIN_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise TrainSetupError(f"training needs the train extra (missing: {', '.join(missing)}): "
                              "pip install 'thinkscale[train]' (on CPU install torch==2.13.0 first)")


@dataclass
class Loaded:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    gguf: Path  # the file the weights came from (its metadata is reused when the trained model is written back)


def load_gguf_model(name_or_path: str | os.PathLike[str], *, dtype: str = "float32") -> Loaded:
    """``name_or_path`` (pulled on first use) as a transformers causal LM and its tokenizer (from the GGUF's own
    vocabulary and chat template). The loader marks the model "quantized with GGUF" although its layers are plain
    dequantized tensors; that mark makes the Trainer refuse it, so it is cleared."""
    require_train_extra()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinkscale.models import resolve

    path = Path(resolve(name_or_path, progress=True))
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise TrainSetupError(f"dtype {dtype!r}: give float32 or bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch_dtype)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model, tokenizer, path)
