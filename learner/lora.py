"""LoRA on the learner (Hu et al. 2021, arXiv 2106.09685): W = W0 + (alpha / r) B A, only A and B train.

Used by learner/engine.py when `learner.lora.rank > 0`. The policy engine trains the
adapters (peft) on top of frozen base weights; everything that leaves the learner is a plain model:
    - the rollout workers and self judges receive merged weights under the base model's HF names
      (`merged_state_dict`), so vLLM needs no LoRA support and the probe check applies unchanged;
    - the reference is the frozen base itself, read through the same module with the adapters
      switched off (`FrozenBase`): no second copy of the weights;
    - checkpoints hold the adapters and the optimizer state (frozen weights are not written: they
      are the starting checkpoint); the final export is a merged HF model.
"""

from __future__ import annotations

import torch

from protocols import LoraConfig


def wrap(model: torch.nn.Module, cfg: LoraConfig) -> torch.nn.Module:
    """`model` with adapters on `cfg.target_modules`; base weights frozen, adapters trainable.

    peft initialises B = 0, so the wrapped model computes exactly what `model` did."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules), bias="none"
    )
    try:
        return get_peft_model(model, peft_cfg)
    except ValueError as err:  # e.g. a target module the architecture does not have
        raise ValueError(f"learner.lora.target_modules {list(cfg.target_modules)}: {err}") from None


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full weights W0 + delta as CPU tensors under the base model's HF names (tied heads included)."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas = {
        name: module.get_delta_weight(module.active_adapters[0])
        for name, module in base.named_modules()
        if isinstance(module, LoraLayer)
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        owner, _, leaf = key.rpartition(".base_layer.")
        tensor = value.detach().to("cpu", copy=True)
        if owner and leaf == "weight" and owner in deltas:
            tensor += deltas[owner].to("cpu", tensor.dtype)
        out[f"{owner}.{leaf}" if owner else key] = tensor
    return out


class FrozenBase(torch.nn.Module):
    """The LoRA policy's base weights as a model of their own (the reference): the same module
    called with its adapters disabled. Holds no parameters of its own."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self._policy = [policy]  # a list: not registered as a submodule (no parameters here)

    def forward(self, **inputs):
        with self._policy[0].disable_adapter():
            return self._policy[0](**inputs)


def adapter_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def exclude_tied_frozen_from_checkpoints(engine) -> None:
    """Make `engine.save_checkpoint(exclude_frozen_parameters=True)` leave out every frozen tensor.

    DeepSpeed drops frozen parameters by `named_parameters()` names, which list a tied weight once,
    so a model with tied embeddings (SmolLM2) still wrote its frozen embedding again under
    `lm_head.weight` (113 MB in every LoRA checkpoint). This wraps the engine's state-dict call to
    drop every frozen alias too."""
    original = engine.module_state_dict

    def module_state_dict(*args, exclude_frozen_parameters: bool = False, **kwargs):
        state = original(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters:
            for name, param in engine.module.named_parameters(remove_duplicate=False):
                if not param.requires_grad:
                    state.pop(name, None)
        return state

    engine.module_state_dict = module_state_dict
