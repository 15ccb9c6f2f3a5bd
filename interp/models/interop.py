"""Models handed over wrapped by another library: nnsight's ``LanguageModel`` and TransformerLens' bridge.

``interp`` works on the Hugging Face model itself. A user coming from another
library often holds it wrapped:

* an nnsight ``LanguageModel`` / ``NNsight`` (an ``Envoy``, not an ``nn.Module``):
  the model is its ``._module`` (with nnsight's ``forward`` controllers, which
  call the original forward outside a trace);
* a TransformerLens 4.x ``TransformerBridge`` (an ``nn.Module`` around the model):
  the model is its ``.original_model``, whose submodules the bridge has swapped
  for bridge components (they keep the Hugging Face paths, so
  ``model.layers.3.mlp`` still resolves, and compute the same tensors).

:func:`unwrap_model` returns that Hugging Face model; :func:`bridge_of` the
bridge, if the user gave one, so the TransformerLens backend can run it
instead of booting a second one. Anything else gets an error that says what
to pass. No wrapper library is imported here.
"""

from __future__ import annotations

from torch import nn

__all__ = ["unwrap_model", "bridge_of", "is_bridge"]


def is_bridge(obj: object) -> bool:
    """A TransformerLens ``TransformerBridge`` (recognised without importing transformer_lens)."""
    return type(obj).__module__.startswith("transformer_lens") and isinstance(
        getattr(obj, "original_model", None), nn.Module
    )


def _is_nnsight(obj: object) -> bool:
    return type(obj).__module__.startswith("nnsight") and isinstance(getattr(obj, "_module", None), nn.Module)


def bridge_of(obj: object):
    """The ``TransformerBridge`` itself if ``obj`` is one, else None."""
    return obj if is_bridge(obj) else None


def unwrap_model(obj: object) -> nn.Module:
    """The Hugging Face ``nn.Module`` inside ``obj`` (``obj`` itself if it is one).

    Raises:
        TypeError: ``obj`` is neither a module nor a wrapper ``interp`` knows; the
            message says what to pass.
    """
    if is_bridge(obj):
        return obj.original_model
    if isinstance(obj, nn.Module):
        return obj
    if _is_nnsight(obj):
        return obj._module
    name = type(obj).__name__
    hint = ""
    if name == "HookedTransformer":
        hint = (
            " A TransformerLens HookedTransformer is not a Hugging Face model: load the model with transformers "
            "(AutoModelForCausalLM.from_pretrained) or boot a TransformerBridge, and pass that."
        )
    raise TypeError(
        f"expected a torch.nn.Module (a Hugging Face causal LM or VLM), an nnsight LanguageModel/NNsight "
        f"(its ._module is used) or a TransformerLens TransformerBridge (its .original_model is used), "
        f"got {name}.{hint}"
    )
