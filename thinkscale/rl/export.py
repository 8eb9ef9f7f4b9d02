"""The trained model back into the engine: merge the LoRA adapter into the base weights and write a GGUF that the
embedded llama.cpp backend runs (``thinkscale solve/eval --model DIR/model.gguf``).

The base GGUF already holds everything but the new weights: its metadata (architecture, hyper-parameters, the
tokenizer's vocabulary, merges and chat template) is copied as it is, and each of its tensors is replaced by the merged
transformers tensor of the same name (gguf's own HF-to-GGUF name map), so the file describes the same network with new
numbers. Written as f32, f16 or q8_0 (1-D tensors, the norms, always f32, as llama.cpp's converter does); llama.cpp's
``llama_model_quantize`` can then make a smaller k-quant (``quantize_gguf``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thinkscale.rl.weights import TrainSetupError

OUT_TYPES = ("f32", "f16", "q8_0")
# llama.cpp's k-quants by name -> its llama_ftype value (llama.h); q8_0 is written directly (OUT_TYPES).
KQUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}


def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp stores a llama model's q/k rows interleaved for its RoPE kernel; transformers' GGUF loader undoes
    this on load, so writing back redoes it (the inverse of the loader's ``_reverse_permute_weights``)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def merged_state(model: Any) -> dict[str, np.ndarray]:
    """The model's weights as fp32 numpy arrays, a peft adapter merged in (the model is left unchanged)."""
    import torch

    if hasattr(model, "merge_and_unload"):
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    with torch.no_grad():
        return {k: v.detach().to(torch.float32).cpu().numpy() for k, v in model.state_dict().items()}


def _field_value(field: Any) -> tuple[Any, Any, Any]:
    import gguf

    vtype = field.types[0]
    sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
    return field.contents(), vtype, sub


def _gguf_names(layout: Layout, state: Mapping[str, np.ndarray], *, partial: bool = False) -> dict[str, str]:
    """GGUF tensor name -> transformers name, for every tensor of the base file (an error names any left over,
    unless ``partial``: an adapter covers some of them)."""
    import gguf

    arch = layout.arch
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(arch)
    if arch_enum is None:
        raise TrainSetupError(f"architecture {arch!r} is unknown to the gguf package: cannot write it back")
    tmap = gguf.get_tensor_name_map(arch_enum, layout.n_blocks)
    names: dict[str, str] = {}
    for hf in state:
        name = tmap.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is not None:
            names.setdefault(name, hf)
        elif partial:
            raise TrainSetupError(f"{hf}: no GGUF name for this {arch} tensor")
    missing = [t for t in layout.tensors if t not in names]
    if missing and not partial:
        raise TrainSetupError(f"the trained model has no tensor for {len(missing)} of the base GGUF's tensors "
                              f"(first: {missing[:3]}): not the same architecture?")
    return names


def _encode(w: np.ndarray, out_type: str) -> tuple[np.ndarray, Any]:
    import gguf

    if w.ndim == 1 or out_type == "f32":
        return w.astype(np.float32), None
    if out_type == "f16":
        return w.astype(np.float16), None
    if w.shape[-1] % 32:
        return w.astype(np.float16), None  # q8_0 needs rows of whole 32-value blocks (as llama.cpp's converter)
    return gguf.quants.quantize(w.astype(np.float32), gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0


def write_gguf(base: Path, state: Mapping[str, np.ndarray], out: Path, *, out_type: str = "f16",
               name: str | None = None) -> Path:
    """Write ``state`` (transformers names) as a GGUF with ``base``'s metadata and tensor set. Written to a temporary
    name and renamed, so a killed export never leaves a file that looks like a model."""
    import gguf

    if out_type not in OUT_TYPES:
        raise TrainSetupError(f"GGUF type {out_type!r}: give one of {', '.join(OUT_TYPES)}")
    reader = gguf.GGUFReader(str(base))
    layout = Layout.of(reader)
    names = _gguf_names(layout, state)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), layout.arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.name"):
            continue
        value, vtype, sub = _field_value(field)
        writer.add_key_value(key, value, vtype, sub_type=sub)
    writer.add_name(name or f"{reader.fields['general.name'].contents()} (thinkscale train)")
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[out_type])
    for t in reader.tensors:
        w = layout.permute(t.name, np.asarray(state[names[t.name]], dtype=np.float32))
        data, raw = _encode(w, out_type)
        writer.add_tensor(t.name, data, raw_dtype=raw)
    return _close(writer, tmp, out)


def _close(writer: Any, tmp: Path, out: Path) -> Path:
    """Write the file under its temporary name, then rename it into place."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def write_model(base: Path, state: Mapping[str, np.ndarray], out: Path, gguf_type: str) -> Path:
    """``state`` as the GGUF ``out`` of type ``gguf_type``: f32/f16/q8_0 written here, or a llama.cpp k-quant
    (q4_k_m, ...) made from an f16 file by the embedded library."""
    if gguf_type in OUT_TYPES:
        return write_gguf(base, state, out, out_type=gguf_type)
    if gguf_type.lower() not in KQUANTS:
        raise TrainSetupError(f"GGUF type {gguf_type!r}: give one of {', '.join((*OUT_TYPES, *KQUANTS))}")
    f16 = write_gguf(base, state, out.with_name(out.name + ".f16"), out_type="f16")
    try:
        return quantize_gguf(f16, out, gguf_type)
    finally:
        f16.unlink(missing_ok=True)


@dataclass(frozen=True)
class Layout:
    """What writing tensors for a base GGUF needs of it. Reading a GGUF's metadata with the gguf package parses the
    whole vocabulary (seconds for a 150k-token tokenizer), so a caller that writes often keeps this."""

    arch: str
    n_blocks: int
    n_head: int | None
    n_head_kv: int | None
    tensors: tuple[str, ...]

    @classmethod
    def read(cls, base: Path) -> Layout:
        import gguf

        reader = gguf.GGUFReader(str(base))
        return cls.of(reader)

    @classmethod
    def of(cls, reader: Any) -> Layout:
        arch = str(reader.fields["general.architecture"].contents())
        heads = reader.fields.get(f"{arch}.attention.head_count")
        heads_kv = reader.fields.get(f"{arch}.attention.head_count_kv")
        return cls(arch, int(reader.fields[f"{arch}.block_count"].contents()),
                   None if heads is None else int(heads.contents()),
                   None if heads_kv is None else int(heads_kv.contents()), tuple(t.name for t in reader.tensors))

    def permute(self, name: str, w: np.ndarray) -> np.ndarray:
        """llama's q/k output rows in llama.cpp's order (other architectures and tensors unchanged)."""
        if self.arch != "llama" or self.n_head is None or not (".attn_q." in name or ".attn_k." in name):
            return w
        n_kv = self.n_head if self.n_head_kv is None else self.n_head_kv
        return llama_permute(w, self.n_head, self.n_head if ".attn_q." in name else n_kv)


def write_lora_gguf(base: Path | Layout, model: Any, out: Path) -> Path:
    """The peft model's LoRA adapter as a llama.cpp adapter GGUF for ``base`` (``<tensor>.lora_a`` (r x in) and
    ``<tensor>.lora_b`` (out x r), f32, ``adapter.lora.alpha``: llama.cpp scales by alpha / rank as peft does), so the
    embedded backend samples from the policy being trained without a merged copy of the model."""
    import gguf
    from peft import get_peft_model_state_dict

    cfg = model.peft_config[model.active_adapter]
    if getattr(cfg, "use_rslora", False) or getattr(cfg, "use_dora", False):
        raise TrainSetupError("only plain LoRA adapters can be handed to llama.cpp (not rsLoRA or DoRA)")
    layout = base if isinstance(base, Layout) else Layout.read(base)
    lora = {k: v.detach().to("cpu").float().numpy() for k, v in get_peft_model_state_dict(model).items()}
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, w in lora.items():  # base_model.model.<hf module>.lora_A.weight
        module, _, which = key.removeprefix("base_model.model.").rpartition(".lora_")
        pairs.setdefault(module + ".weight", {})[which.split(".")[0]] = w
    names = {hf: g for g, hf in _gguf_names(layout, {k: np.empty(0) for k in pairs}, partial=True).items()}
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), layout.arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(cfg.lora_alpha))
    for hf, ab in sorted(pairs.items()):
        name = names.get(hf)
        if name is None or set(ab) != {"A", "B"}:
            raise TrainSetupError(f"adapter module {hf}: no GGUF tensor of the base model, or not an A/B pair")
        b = layout.permute(name, ab["B"])
        writer.add_tensor(name + ".lora_a", np.ascontiguousarray(ab["A"], dtype=np.float32))
        writer.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    return _close(writer, tmp, out)


def quantize_gguf(src: Path, out: Path, kind: str, *, threads: int = 0) -> Path:
    """llama.cpp's own quantizer (the embedded library): ``src`` (f16/f32) -> ``out`` as ``kind`` (e.g. q4_k_m)."""
    from thinkscale.backends.llamacpp import quantize_model

    ftype = KQUANTS.get(kind.lower())
    if ftype is None:
        raise TrainSetupError(f"quantization {kind!r}: give one of {', '.join(KQUANTS)}")
    tmp = out.with_name(out.name + ".partial")
    quantize_model(src, tmp, ftype, threads=threads)
    tmp.replace(out)
    return out
