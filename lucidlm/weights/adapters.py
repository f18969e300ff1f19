"""LoRA adapters on disk in PEFT's format: adapter_config.json + adapter_model.safetensors.

Tensors are named by the Hugging Face layout of the model's family, from the same name table that
loads its weights (base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight), so peft loads
our adapters onto the transformers model and we load peft's. A family whose Hugging Face layout
fuses what we adapt apart (GPT-2's c_attn holds q, k and v) keeps our own module names instead:
lucidlm reads those back, peft does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import FormatError, LucidError, reading
from ..files import read_json
from ..locate import ADAPTER_FILE
from ..model.lora import WHOLE, LoRALinear, LoRASettings, lora_layers
from .hf_config import HF_FAMILIES, hf_family

ADAPTER_WEIGHTS = "adapter_model.safetensors"
PREFIX = "base_model.model."  # peft's PeftModel -> LoraModel -> the transformers model


def hf_module_names(config) -> dict[tuple[str, str], str]:
    """(our module path, part) -> the Hugging Face module that holds that matrix (or that part of
    our fused matrix); empty when no Hugging Face family computes what this config does."""
    try:
        table = HF_FAMILIES[hf_family(config)].table
    except FormatError:
        return {}
    names = {}
    for source, row in table.expand(config.n_layers, config.encoder_layers).items():
        if source.endswith(".weight") and row.target.endswith(".weight"):
            names[(row.target.removesuffix(".weight"), row.part or WHOLE)] = source.removesuffix(".weight")
    return names


def adapter_tensors(model) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The adapters' tensors under PEFT's names (our own where a Hugging Face layout cannot name a
    part apart), and the target module names."""
    names = hf_module_names(model.config)
    hf_layout = all((path, part) in names for path, layer in lora_layers(model).items() for part in layer.parts)
    tensors, targets = {}, set()
    for path, layer in lora_layers(model).items():
        for part in layer.parts:
            module = names[(path, part)] if hf_layout else f"{path}.{part}"
            targets.add(module.rsplit(".", 1)[-1])
            tensors[f"{PREFIX}{module}.lora_A.weight"] = layer.lora_A[part].detach().float().cpu().contiguous()
            tensors[f"{PREFIX}{module}.lora_B.weight"] = layer.lora_B[part].detach().float().cpu().contiguous()
    return tensors, sorted(targets)


def write_adapter(model, folder: Path, base: str) -> None:
    """Write the model's adapters into an existing (temporary) folder. base: the base model's path
    or hub id, which loading the adapter opens."""
    layers = lora_layers(model)
    if not layers:
        raise LucidError("this model has no adapters to save")
    settings: LoRASettings = next(iter(layers.values())).settings
    tensors, targets = adapter_tensors(model)
    config = model.config
    task = "CAUSAL_LM" if config.causal and config.head == "lm" and not config.is_encoder_decoder else None
    description = {
        "peft_type": "LORA", "task_type": task, "base_model_name_or_path": base, "r": settings.rank,
        "lora_alpha": settings.alpha, "lora_dropout": settings.dropout, "use_rslora": settings.rslora,
        "target_modules": targets, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "modules_to_save": None, "use_dora": False, "rank_pattern": {},
        "alpha_pattern": {}, "layers_to_transform": None}
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / ADAPTER_FILE).write_text(json.dumps(description, indent=2), encoding="utf-8")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """The adapter's description, checked: LoRA without the variants we do not compute."""
    path = folder / ADAPTER_FILE
    data = read_json(path)
    if data.get("peft_type", "LORA") != "LORA":
        raise FormatError(f"{path}: the adapter is of type {data.get('peft_type')}; lucidlm reads LoRA adapters only")
    unsupported = [key for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save",
                                   "layers_to_transform", "layer_replication") if data.get(key)]
    if data.get("bias", "none") != "none":
        unsupported.append(f"bias={data['bias']}")
    if unsupported:
        raise FormatError(f"{path}: this adapter uses {', '.join(unsupported)}, which lucidlm does not compute")
    for key, kind in (("r", int), ("lora_alpha", (int, float))):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool) or data[key] <= 0:
            raise FormatError(f"{path}: {key} must be a positive number (got {data.get(key)!r})")
    return data


def apply_adapter(model, folder: Path) -> None:
    """Wrap the model's layers with the adapters stored in `folder` (the base stays frozen, the
    adapters trainable, as after add_lora)."""
    data = read_adapter_config(folder)
    settings = LoRASettings(rank=data["r"], alpha=float(data["lora_alpha"]),
                            dropout=float(data.get("lora_dropout") or 0.0), rslora=bool(data.get("use_rslora")))
    # (its roles go unused: the file's tensors say which layers and parts are adapted)
    with reading(folder / ADAPTER_WEIGHTS, "adapter weights"):
        tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    ours = {module: key for key, module in hf_module_names(model.config).items()}
    found: dict[str, dict[str, dict[str, torch.Tensor]]] = {}  # our module -> part -> {"A", "B"}
    for name, tensor in tensors.items():
        stem = name.removeprefix(PREFIX)
        kind = "A" if stem.endswith(".lora_A.weight") else "B" if stem.endswith(".lora_B.weight") else None
        module = stem.rsplit(".lora_", 1)[0] if kind else None
        if module in ours:
            path, part = ours[module]
        elif module is not None and module.startswith("blocks.") and "." in module:
            path, part = module.rsplit(".", 1)  # our own names (a family peft cannot name apart)
        else:
            raise FormatError(f"{folder / ADAPTER_WEIGHTS}: tensor {name} adapts no layer of this model")
        found.setdefault(path, {}).setdefault(part, {})[kind] = tensor
    if not found:
        raise FormatError(f"{folder / ADAPTER_WEIGHTS}: no adapter tensors")
    for p in model.parameters():
        p.requires_grad_(False)
    for path, parts in found.items():
        try:
            base = model.get_submodule(path)
        except AttributeError:
            raise FormatError(f"{folder}: the adapter names {path}, which this model does not have") from None
        module = path.split(".", 2)[-1]
        rows = {part: (config_rows(model.config, module, part) if part != WHOLE else (0, base.out_features))
                for part in parts}
        layer = LoRALinear(base, rows, settings).train(model.training)  # an eval model drops nothing
        for part, pair in parts.items():
            for kind, target in (("A", layer.lora_A[part]), ("B", layer.lora_B[part])):
                if kind not in pair or tuple(pair[kind].shape) != tuple(target.shape):
                    got = tuple(pair[kind].shape) if kind in pair else "missing"
                    raise FormatError(f"{folder / ADAPTER_WEIGHTS}: lora_{kind} of {path} ({part}) is {got}, "
                                      f"this model needs {tuple(target.shape)}")
                with torch.no_grad():
                    target.copy_(pair[kind])
        model.set_submodule(path, layer)


def config_rows(config, module: str, part: str) -> tuple[int, int]:
    try:
        return config.part_rows(module)[part]
    except KeyError:
        raise FormatError(f"the adapter adapts part {part!r} of {module}, which has no such part") from None
