"""TransformerLens 4.x ``TransformerBridge`` (``backend="transformer_lens"``).

The bridge is booted around the user's own HF model
(``TransformerBridge.boot_transformers(dir, hf_model=model, tokenizer=...)``)
and sites are read from the bridge's own hook points (:func:`tl_hook_name`):

==============================  =====================================================
site                            bridge hook point
==============================  =====================================================
hidden-state index 0            ``blocks.0.hook_resid_pre``
hidden-state index i (1..L-1)   ``blocks.{i-1}.hook_resid_post``
hidden-state index L            ``ln_final.hook_out``
``ln_final.hook_normalized``    ``ln_final.hook_out`` (the norm's output, weight included)
any other vocabulary name       the same name (``blocks.3.attn.hook_pattern``, ...)
a module path                   ``hook_in`` / ``hook_out`` of the bridge component that
                                replaced that module (``model.layers.3.mlp.down_proj``
                                -> ``blocks.3.mlp.out.hook_out``); a module the bridge
                                does not wrap (an activation function) is read with a
                                torch hook on it, which the bridge still calls
==============================  =====================================================

(TL's last ``hook_resid_post`` is *before* the final norm, HF's last hidden
state after it, hence ``ln_final.hook_out`` for index L.) The bridge computes
attention itself, so its ``hook_pattern`` is TransformerLens' own pattern.

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

from interp.extraction.backends.base import Backend, first_input, first_tensor
from interp.extraction.sites import Site
from interp.models.adapter import resolve_path

__all__ = ["TransformerLensBackend", "tl_hook_name"]


def tl_hook_name(site: Site, n_blocks: int, bridged: torch.nn.Module | None = None) -> str | None:
    """The bridge hook point that carries ``site`` (None: a module the bridge does not wrap).

    ``bridged`` is the booted model, needed for module paths.
    """
    if site.kind == "hidden":
        if site.hidden_index == 0:
            return "blocks.0.hook_resid_pre"
        if site.hidden_index < n_blocks:
            return f"blocks.{site.hidden_index - 1}.hook_resid_post"
        return "ln_final.hook_out"
    if site.kind == "ln_final":
        return "ln_final.hook_out"
    if site.kind != "module":
        return site.name
    component = resolve_path(bridged, site.module) if bridged is not None else None
    point = getattr(component, "hook_in" if site.io == "input" else "hook_out", None)
    name = getattr(point, "name", None)
    return name if isinstance(name, str) else None


class _TorchSiteHook:
    """A plain torch hook on a module the bridge calls but does not wrap."""

    def __init__(self, backend: TransformerLensBackend, site: Site):
        self.backend, self.site = backend, site

    def on_input(self, module, args, kwargs) -> None:
        self.backend.recorder.record(self.site.key, first_input(args, kwargs))

    def on_output(self, module, args, output) -> None:
        self.backend.recorder.record(self.site.key, first_tensor(output))


class TransformerLensBackend(Backend):
    name = "transformer_lens"
    probes_attention = False  # the bridge computes attention (eager) and has hook_pattern

    def open(self) -> None:
        self._tmp = None
        self._own_bridge = self.bridge is None
        if self._own_bridge:
            self.bridge = self._boot()
        n_blocks = self.adapter.n_blocks
        hooks, self._handles = [], []
        for site in self.sites:
            name = tl_hook_name(site, n_blocks, self.model)
            if name is not None:
                hooks.append((name, partial(self._on_hook, site.key)))
                continue
            module = resolve_path(self.model, site.module)
            if module is None:
                raise ValueError(f"site {site.name!r}: no such module in the TransformerLens bridge")
            hook = _TorchSiteHook(self, site)
            if site.io == "input":
                self._handles.append(module.register_forward_pre_hook(hook.on_input, with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(hook.on_output))
        self._hooks = self.bridge.hooks(fwd_hooks=hooks)
        self._hooks.__enter__()

    def _boot(self):
        """A bridge around the user's model (every change undone by the guard), offline."""
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
        return TransformerBridge.boot_transformers(self._tmp.name, hf_model=self.model, tokenizer=tokenizer)

    def close(self) -> None:
        hooks, self._hooks = getattr(self, "_hooks", None), None
        for handle in getattr(self, "_handles", []):
            handle.remove()
        try:
            if hooks is not None:
                hooks.__exit__(None, None, None)
        finally:
            if getattr(self, "_own_bridge", False):
                self.bridge = None
            if getattr(self, "_tmp", None) is not None:
                self._tmp.cleanup()

    def forward(self, inputs: dict[str, torch.Tensor]) -> None:
        self.bridge(
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
            return_type=None,
        )

    def _on_hook(self, key: int | str, tensor: torch.Tensor, hook) -> None:
        self.recorder.record(key, tensor)
