"""A toy VLM that knows where to look: a small LLaVA trained from scratch on synthetic spatial scenes.

No real VLM weights can be downloaded here, and a LLaVA with random weights has attention that
means nothing. :func:`spatial_vlm` returns a real ``LlavaForConditionalGeneration`` (CLIP vision
tower + projector + Llama text model, the LLaVA geometry: image tokens spliced into the prompt)
trained deterministically on :func:`~.scenes.spatial_scene` to answer the WhatsUp Controlled-A
question *"Where is the red box in relation to the blue ball? Answer with left, right, on or under."*

Data flow: a :class:`SpatialVLMConfig` (a named :data:`VARIANTS` entry plus overrides) ->
:func:`build` (word tokenizer over :func:`vocabulary`, processor, randomly initialised model)
-> :func:`interp.vlm.eval.spatial_training.train` -> weights cached under
``interp.models.loading.cache_dir() / "spatial-vlm" / <variant>-<key>``, the key a SHA-256 of the
config, the recipe version and the torch / transformers / Pillow versions (everything that
changes the weights). Later calls load the cached weights (about a second).

Design choices (see docs/results.md for what they give):

* a word tokenizer (one token per word), so the prompt is ~26 tokens and every token has a
  readable string for the figures;
* image tokens come from the vision tower's second-to-last hidden state (LLaVA's
  ``vision_feature_layer=-2``) -- with ``vision_layers=2`` one CLIP block mixes the patches;
* the CLIP position embedding starts as a 2-D sine/cosine pattern (``position_init`` times unit
  amplitude) instead of noise, and all weights start with ``init_std``: from the library defaults
  (0.02, random positions) the model stays at chance for over a thousand steps on this task;
* conversations add "where is X in the photo" turns after the evaluated question
  (:mod:`.spatial_training`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from interp.models.loading import cache_dir
from interp.models.tiny import tiny_llava, tiny_llava_processor, word_tokenizer
from interp.vlm.eval.scenes import COLORS, REFERENCE, SHAPES, position_prompt, relation_prompt
from interp.vlm.eval.spatial_training import ANSWER_WORDS, deterministic, train

__all__ = ["RECIPE_VERSION", "SpatialVLMConfig", "VARIANTS", "build", "spatial_vlm", "vocabulary", "config_key"]

#: bump when the training code changes what a config trains to (it is part of the cache key)
RECIPE_VERSION = 2


@dataclass(frozen=True)
class SpatialVLMConfig:
    """Everything that determines the trained weights.

    Attributes:
        name: the variant's name (for messages and the cache folder).
        d_model, n_blocks, n_heads: the Llama text model (the vision tower has the same width and heads).
        vision_layers: CLIP blocks (LLaVA reads the second-to-last hidden state).
        image_size, patch_size: the vision tower's input side and patch (grid = image_size // patch_size).
        scene_size: ``(width, height)`` of the rendered scenes (the processor resizes and crops them).
        n_distractors: ``(min, max)`` extra objects per training scene, from step
            ``distractors_from · steps`` on (none before: a curriculum).
        steps, batch_size, lr, warmup, decay_from, weight_decay, clip: the optimisation.
        init_std, position_init: initial weight scale; amplitude of the sine/cosine position embedding.
        seed: initialisation seed and training-data stream.
        threads: CPU threads used for training (1: fastest on a busy 2-core machine, and the same
            result whatever the machine's core count).
    """

    name: str = "full"
    d_model: int = 64
    n_blocks: int = 4
    n_heads: int = 4
    vision_layers: int = 2
    image_size: int = 64
    patch_size: int = 8
    scene_size: tuple[int, int] = (64, 64)
    n_distractors: tuple[int, int] = (0, 2)
    distractors_from: float = 0.4
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 50
    decay_from: float = 0.7
    weight_decay: float = 0.01
    clip: float = 1.0
    init_std: float = 0.1
    position_init: float = 0.5
    seed: int = 0
    threads: int = 1

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side


#: ``"full"``: the model of docs/results.md (held-out accuracy 0.82-0.90, ~4 min to train on one core);
#: ``"small"``: the same recipe, 100 steps (~15 s) -- it still answers at chance (the full model is
#: at chance until ~step 300 too): only for exercising the plumbing (CI runs the notebook on it).
VARIANTS = {
    "full": SpatialVLMConfig(),
    "small": SpatialVLMConfig(name="small", steps=100),
}


def vocabulary() -> list[str]:
    """Every word of the prompts, the object names and the answers (the word tokenizer's vocabulary)."""
    words: list[str] = []
    for text in (relation_prompt("X", "Y"), position_prompt("X")):
        for ch in "?,.:":
            text = text.replace(ch, f" {ch} ")
        words += [w for w in text.replace("<image>", " ").split() if w not in ("X", "Y")]
    return list(dict.fromkeys([*words, *COLORS, *SHAPES, REFERENCE, *ANSWER_WORDS]))


def _sincos_2d(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """``[gh · gw, dim]`` 2-D sine/cosine position pattern, row-major over the patch grid.

    A quarter of the channels each: sin(y·f), cos(y·f), sin(x·f), cos(x·f) with frequencies
    ``f_k = 1.5 · side^(-k/n)``, ``k = 0..n-1``, ``n = dim // 4`` (remaining channels 0).
    """
    gh, gw = grid
    n = dim // 4
    freq = 1.5 * float(max(gh, gw)) ** (-torch.arange(n, dtype=torch.float64) / max(n, 1))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")  # fmt: skip
    y, x = ys.reshape(-1, 1) * freq, xs.reshape(-1, 1) * freq
    out = torch.zeros(gh * gw, dim, dtype=torch.float64)
    out[:, : 4 * n] = torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1)
    return out.float()


def build(config: SpatialVLMConfig) -> tuple[nn.Module, object]:
    """The untrained model and its processor for ``config`` (deterministic in ``config.seed``)."""
    tokenizer = word_tokenizer(vocabulary())
    processor = tiny_llava_processor(config.image_size, config.patch_size, tokenizer=tokenizer)
    model = tiny_llava(
        n_layers=config.n_blocks,
        d_model=config.d_model,
        n_heads=config.n_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        seed=config.seed,
        tokenizer=tokenizer,
        vision_layers=config.vision_layers,
        init_std=config.init_std,
    )
    if config.position_init:
        table = model.model.vision_tower.embeddings.position_embedding.weight  # [1 + patches, d]: CLS first
        with torch.no_grad():
            table[1:] = config.position_init * _sincos_2d(config.grid, config.d_model)
    return model, processor


def config_key(config: SpatialVLMConfig) -> str:
    """SHA-256 of everything that changes the trained weights (config, recipe, library versions)."""
    import PIL
    import transformers

    payload = {
        "config": dataclasses.asdict(config),
        "recipe": RECIPE_VERSION,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _resolve(variant: str | SpatialVLMConfig, overrides: dict) -> SpatialVLMConfig:
    if isinstance(variant, SpatialVLMConfig):
        config = variant
    elif variant in VARIANTS:
        config = VARIANTS[variant]
    else:
        raise ValueError(f"unknown variant {variant!r}; choose from {list(VARIANTS)} or pass a SpatialVLMConfig")
    fields = {f.name for f in dataclasses.fields(SpatialVLMConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown SpatialVLMConfig fields {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(config, **overrides)


def spatial_vlm(
    variant: str | SpatialVLMConfig = "full", *, progress: bool = True, cache: bool = True, **overrides
) -> tuple[nn.Module, object]:
    """The trained toy spatial VLM and its processor (trained on first use, then cached).

    Args:
        variant: ``"full"`` (1500 steps: about 4 minutes on one CPU core), ``"small"`` (100 steps,
            answers at chance: plumbing only),
            or a :class:`SpatialVLMConfig`.
        progress: show the training progress bar.
        cache: load from / save to the cache (``False``: always train, write nothing).
        **overrides: :class:`SpatialVLMConfig` fields to change (e.g. ``seed=1``, ``steps=50``).

    Returns:
        ``(model, processor)``, the model in eval mode with ``model.spatial_config`` (the config) and
        ``model.training_log`` (list of ``{step, loss, lr, seconds}``; loaded from the cache too).
    """
    from transformers import LlavaForConditionalGeneration

    config = _resolve(variant, overrides)
    key = config_key(config)
    target = cache_dir() / "spatial-vlm" / f"{config.name}-{key[:16]}"
    if cache and (target / "model.safetensors").is_file() and (target / "training.json").is_file():
        _, processor = build(dataclasses.replace(config, steps=0))
        model = LlavaForConditionalGeneration.from_pretrained(target, dtype=torch.float32).eval()
        log = json.loads((target / "training.json").read_text())["log"]
    else:
        model, processor, log = _train(config, progress)
        if cache:
            _save(model, config, key, log, target)
    model.spatial_config = config
    model.training_log = log
    return model, processor


def _train(config: SpatialVLMConfig, progress: bool):
    with deterministic(config.threads):
        model, processor = build(config)
        log = train(model, processor, config, progress=progress)
    return model, processor, log


def _save(model: nn.Module, config: SpatialVLMConfig, key: str, log: list[dict], target: Path) -> None:
    """Write the weights and the log to ``target`` atomically (a temporary folder renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        build_dir = Path(tmp) / "model"
        model.save_pretrained(build_dir)
        meta = {"config": dataclasses.asdict(config), "key": key, "recipe": RECIPE_VERSION, "log": log}
        (build_dir / "training.json").write_text(json.dumps(meta))
        if (target / "model.safetensors").is_file():  # a concurrent trainer won; keep theirs
            return
        shutil.rmtree(target, ignore_errors=True)
        os.replace(build_dir, target)
