"""TransformerLens 4.x ``TransformerBridge`` (``backend="transformer_lens"``).

The bridge is booted around the user's own HF model
(``TransformerBridge.boot_transformers(dir, hf_model=model, tokenizer=...)``)
and hidden states are read from TransformerLens' canonical hook names:

=========  ============================
index      hook
=========  ============================
0          ``blocks.0.hook_resid_pre``
i (1..L-1) ``blocks.{i-1}.hook_resid_post``
L          ``ln_final.hook_out``
=========  ============================

(TL's last ``hook_resid_post`` is *before* the final norm, HF's last hidden
state after it, hence ``ln_final.hook_out`` for index L.)

Booting mutates the model -- every submodule is swapped for a bridge component
and attention is switched to eager -- and everything is undone on exit by the
guard. To stay offline, the bridge is given a local directory holding the
model's config and a *copy* of the tokenizer flagged ``add_bos_token=True``
(otherwise TL re-downloads the tokenizer from the hub).
"""

from __future__ import annotations

import copy
import tempfile
from functools import partial

import torch

from interp.extraction.backends.base import Backend

__all__ = ["TransformerLensBackend", "tl_hook_name"]


def tl_hook_name(index: int, n_blocks: int) -> str:
    """TransformerLens hook name that carries hidden-state ``index``."""
    if index == 0:
        return "blocks.0.hook_resid_pre"
    if index < n_blocks:
        return f"blocks.{index - 1}.hook_resid_post"
    return "ln_final.hook_out"


class TransformerLensBackend(Backend):
    name = "transformer_lens"

    def open(self) -> None:
        try:
            from transformer_lens.model_bridge import TransformerBridge
        except ImportError as err:  # pragma: no cover - a declared dependency
            raise ImportError("backend='transformer_lens' needs transformer-lens>=4.3,<5") from err
        if self.adapter.lm_head is None:
            raise ValueError(
                f"backend='transformer_lens' needs the full language model with its LM head, got the bare "
                f"{type(self.model).__name__} (TransformerBridge cannot wrap it); pass the ...ForCausalLM model, "
                "or use backend='hf' or 'nnsight', which work on bare models"
            )
        config = self.model.config
        if not getattr(config, "architectures", None):
            config.architectures = [type(self.model).__name__]  # restored by the guard
        self._tmp = tempfile.TemporaryDirectory(prefix="interp-tl-")
        config.save_pretrained(self._tmp.name)
        tokenizer = copy.deepcopy(self.tokenizer)
        tokenizer.init_kwargs["name_or_path"] = self._tmp.name
        tokenizer.init_kwargs["add_bos_token"] = True
        self.bridge = TransformerBridge.boot_transformers(self._tmp.name, hf_model=self.model, tokenizer=tokenizer)
        n_blocks = self.adapter.n_blocks
        hooks = [(tl_hook_name(i, n_blocks), partial(self._on_hook, i)) for i in self.layers]
        self._hooks = self.bridge.hooks(fwd_hooks=hooks)
        self._hooks.__enter__()

    def close(self) -> None:
        hooks, self._hooks = getattr(self, "_hooks", None), None
        try:
            if hooks is not None:
                hooks.__exit__(None, None, None)
        finally:
            self.bridge = None
            self._tmp.cleanup()

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        self.bridge(
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
            return_type=None,
        )

    def _on_hook(self, index: int, tensor: torch.Tensor, hook) -> None:
        self.recorder.record(index, tensor)
