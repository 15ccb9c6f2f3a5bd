"""Per-language language-modelling loss on held-out texts: an offline proxy for
cross-lingual generalisation.

For each language, the loss is the **token-weighted** mean next-token
negative log-likelihood over all its texts (total NLL / total targets), and
perplexity is ``exp(loss)``. Texts are tokenised alone with special tokens,
length-sorted and right-padded; padded positions are never targets, so the
numbers do not depend on the batch size. The model runs in eval mode under
``torch.no_grad`` and its train/eval mode is restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import check_int, check_texts
from interp.data.corpus import ParallelCorpus
from interp.freeze.batching import lm_batch, summed_nll, tokenize_for_lm
from interp.models.inputs import pad_id

__all__ = ["language_loss"]


def _by_language(corpus) -> dict[str, list[str]]:
    if isinstance(corpus, ParallelCorpus):
        return {lang: list(corpus.texts[lang]) for lang in corpus.langs}
    if isinstance(corpus, Mapping):
        if not corpus:
            raise ValueError("the held-out corpus has no languages")
        return {lang: check_texts(texts, f"held-out texts of {lang!r}") for lang, texts in corpus.items()}
    raise TypeError(f"corpus must be a ParallelCorpus or a dict {{language: [texts]}}, got {type(corpus).__name__}")


def language_loss(
    model: nn.Module,
    tokenizer,
    corpus: ParallelCorpus | Mapping[str, Sequence[str]],
    batch_size: int = 8,
    max_length: int | None = 128,
    progress: bool = True,
) -> pd.DataFrame:
    """Mean next-token loss and perplexity per language.

    Args:
        model: a causal LM.
        tokenizer: its tokenizer.
        corpus: a :class:`~interp.data.ParallelCorpus` or ``{language: [texts]}``.
        batch_size: texts per forward pass.
        max_length: truncate texts to this many tokens (``None``: no truncation).
        progress: show a tqdm progress bar.

    Returns:
        DataFrame, one row per language (corpus order): ``language, loss,
        perplexity, n_tokens`` (next-token targets), ``n_texts``.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    texts_by_lang = _by_language(corpus)
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    modes = [m.training for m in model.modules()]
    rows = []
    total_texts = sum(len(v) for v in texts_by_lang.values())
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=total_texts, desc="lm loss", unit="text", disable=not progress) as bar:
            for lang, texts in texts_by_lang.items():
                tokens = [s for s in tokenize_for_lm(tokenizer, texts, max_length) if len(s.input_ids) >= 2]
                sequences = sorted(tokens, key=lambda s: len(s.input_ids))
                nll, count = 0.0, 0
                for start in range(0, len(sequences), batch_size):
                    ids, mask = lm_batch(sequences[start : start + batch_size], pad, device)
                    total, n = summed_nll(model, ids, mask)
                    nll += float(total.double())
                    count += n
                    bar.update(min(batch_size, len(sequences) - start))
                bar.update(len(texts) - len(sequences))
                if count == 0:
                    raise ValueError(f"no held-out text of {lang!r} has 2 or more tokens; nothing to score")
                rows.append({"language": lang, "loss": nll / count, "perplexity": math.exp(nll / count),
                             "n_tokens": count, "n_texts": len(texts)})  # fmt: skip
    finally:
        for module, mode in zip(model.modules(), modes, strict=True):
            module.training = mode
    return pd.DataFrame(rows, columns=["language", "loss", "perplexity", "n_tokens", "n_texts"])
