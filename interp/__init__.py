"""interp: mechanistic interpretability of language and vision-language models.

Hook-based activation extractors (plain torch hooks, TransformerLens 4.x,
nnsight) feed analysis modules. Start with::

    import interp
    model, tok = interp.load_model()          # embedded offline Gemma 3 270M
    acts = interp.extract(model, tok, ["Hello.", "Bonjour."])
    acts.tensor.shape                          # [19 layers, 2 texts, 640]
    interp.extract(model, tok, ["Hello."], sites="blocks.*.attn.hook_pattern", pooling="none")
    with interp.patch(model, {"blocks.3.hook_mlp_out": "zero"}): ...   # docs/sites.md

Importing interp has no side effects: nnsight and transformer_lens are only
imported when their backend is used.
"""

from interp import freeze, ilo, patching, similarity
from interp.extraction import Activations, ActivationStore, extract, extract_generate
from interp.models import DEFAULT_MODEL, get_adapter, load_model
from interp.neighbors import knn, neighbor_labels
from interp.patching import patch, patching_sweep, run_with_patches
from interp.version import __version__

__all__ = [
    "Activations",
    "ActivationStore",
    "DEFAULT_MODEL",
    "__version__",
    "extract",
    "extract_generate",
    "freeze",
    "get_adapter",
    "ilo",
    "knn",
    "load_model",
    "neighbor_labels",
    "patch",
    "patching",
    "patching_sweep",
    "run_with_patches",
    "similarity",
]
