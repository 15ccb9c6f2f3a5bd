"""Interventions on a text model's activations: replace, steer, ablate, patch clean into corrupted.

Data flow: ``{site: what}`` -> :mod:`interp.extraction.sites` resolves each site
to where it lives in the model (the same place extraction reads it) ->
:mod:`.ops` turns ``what`` into new values (replace / add / zero / mean /
function) -> :mod:`.hooks` writes them with torch hooks, or for attention
patterns an attention hook (:mod:`interp.models.attention`), at the selected
positions and heads, inside :func:`interp.models.guard.preserved` ->
:mod:`.sweep` runs the activation-patching recipe over sites x positions into
a tidy table and :mod:`.plot` draws it; :mod:`.attribute` takes gradients at
the same sites (gradient × activation, attribution patching).

Example::

    import interp
    from interp import patching

    with interp.patch(model, {"blocks.3.hook_mlp_out": "zero"}):
        ablated = model(**inputs).logits
    logits = interp.run_with_patches(model, inputs, {"blocks.2.attn.hook_z": patching.zero(heads=[1])})
    result = interp.patching_sweep(model, tok, "The Eiffel Tower is in", "The Colosseum is in",
                                   answer=" Paris", wrong=" Rome")
    result.plot()
"""

from interp.patching.attribute import Attribution, attribute
from interp.patching.hooks import patch, run_with_patches
from interp.patching.ops import Add, Apply, Mean, Patch, Replace, Zero, add, apply, as_patch, mean, replace, zero
from interp.patching.sweep import PatchingResult, answer_token, patching_sweep

__all__ = [
    "Add",
    "Apply",
    "Attribution",
    "Mean",
    "Patch",
    "PatchingResult",
    "Replace",
    "Zero",
    "add",
    "answer_token",
    "apply",
    "as_patch",
    "attribute",
    "mean",
    "patch",
    "patching_sweep",
    "replace",
    "run_with_patches",
    "zero",
]
