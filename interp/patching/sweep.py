"""Activation patching from a clean run into a corrupted run, over sites x positions.

The recipe (Meng et al. 2022's causal tracing, Wang et al. 2022's activation
patching; TransformerLens' ``get_act_patch_*`` compute the same table):

1. run the **clean** prompt (``"The Eiffel Tower is in the city of"``) and keep
   every patched site's per-token activation (:func:`interp.extract`, ``pooling="none"``);
2. run the **corrupted** prompt (same token length, ``"The Colosseum is in the city of"``)
   and measure the metric -- by default the logit difference at the last position
   between the clean answer (``" Paris"``) and the corrupted one (``" Rome"``);
3. for each site and position, run the corrupted prompt with that one activation
   replaced by the clean run's (:func:`interp.patch`) and measure again.

``normalized = (patched - corrupted) / (clean - corrupted)``: 1 where that single
activation restores the clean behaviour, 0 where it does nothing. One batched
forward per site does every position at once (row ``p`` of the batch is
patched at position ``p``), so a sweep costs ``n_sites`` forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import is_int
from interp.extraction.api import extract
from interp.extraction.sites import resolve_sites
from interp.models.adapter import get_adapter
from interp.models.inputs import token_strings
from interp.models.interop import unwrap_model
from interp.patching.hooks import patch
from interp.patching.ops import Replace

__all__ = ["PatchingResult", "LogitDiff", "patching_sweep", "answer_token"]


@dataclass(frozen=True)
class PatchingResult:
    """A patching sweep.

    Attributes:
        table: one row per (site, position): ``site``, ``block`` (None outside
            blocks), ``position``, ``token`` (the clean prompt's token there),
            ``metric`` (after patching), ``normalized``.
        clean, corrupted: the metric of the unpatched runs.
        tokens: the clean prompt's tokens, as strings.
    """

    table: pd.DataFrame
    clean: float
    corrupted: float
    tokens: list[str]

    def matrix(self) -> pd.DataFrame:
        """``normalized`` as a sites x positions frame (sites in sweep order)."""
        wide = self.table.pivot(index="site", columns="position", values="normalized")
        return wide.loc[list(dict.fromkeys(self.table["site"]))]

    def plot(self, ax=None, title: str | None = None):
        """Heatmap of ``normalized`` (sites x positions, token strings on the x axis)."""
        from interp.patching.plot import plot_patching

        return plot_patching(self, ax=ax, title=title)


def answer_token(tokenizer, answer: str | int) -> int:
    """The id of a one-token answer (``" Paris"``, with its leading space), or a clear error."""
    if is_int(answer):
        return int(answer)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = token_strings(tokenizer, ids)
        raise ValueError(
            f"the answer {answer!r} is {len(ids)} tokens {pieces} for this tokenizer; pick a one-token answer "
            "(mind the leading space: ' Paris') or pass its token id"
        )
    return ids[0]


@dataclass(frozen=True)
class LogitDiff:
    """The default metric: ``logit[good] - logit[bad]`` (or ``logit[good]`` alone) of ``[B, vocab]`` logits."""

    good: int
    bad: int | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[:, self.good] - (logits[:, self.bad] if self.bad is not None else 0.0)


def _last_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """``[B, vocab]`` logits at the last position (only that position goes through the LM head)."""
    with torch.no_grad():
        return model(input_ids=input_ids, logits_to_keep=1).logits[:, -1].float()


def patching_sweep(
    model: nn.Module,
    tokenizer,
    clean: str,
    corrupted: str,
    answer: str | int,
    wrong: str | int | None = None,
    sites: str | Sequence = "blocks.*.hook_resid_pre",
    positions: str | Sequence[int] = "all",
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> PatchingResult:
    """Patch each site x position of the clean run into the corrupted run (see the module docstring).

    Args:
        model, tokenizer: a Hugging Face causal LM of a known family and its tokenizer.
        clean, corrupted: two prompts of the same token length.
        answer, wrong: one-token answers (strings or ids) of the clean and the corrupted
            prompt; the default metric is ``logit[answer] - logit[wrong]`` at the last position.
        sites: site names / globs (default every block's ``hook_resid_pre``), as :func:`interp.extract`.
        positions: ``"all"`` or the positions to patch.
        metric: a function of the last-position logits ``[B, vocab] -> [B]`` instead.

    Returns:
        :class:`PatchingResult` (``.table``, ``.matrix()``, ``.plot()``).
    """
    model = unwrap_model(model)
    adapter = get_adapter(model)
    if adapter.lm_head is None:
        raise ValueError("patching_sweep needs a causal LM with its LM head (a ...ForCausalLM model)")
    ids = [tokenizer(text)["input_ids"] for text in (clean, corrupted)]
    if len(ids[0]) != len(ids[1]):
        raise ValueError(
            f"the clean and corrupted prompts must have the same number of tokens, got {len(ids[0])} and "
            f"{len(ids[1])} ({token_strings(tokenizer, ids[0])} vs {token_strings(tokenizer, ids[1])})"
        )
    T = len(ids[0])
    cols = list(range(T)) if positions == "all" else [p % T for p in positions]
    bad = None if wrong is None else answer_token(tokenizer, wrong)
    measure = metric or LogitDiff(answer_token(tokenizer, answer), bad)
    site_list = resolve_sites(sites, adapter)
    clean_acts = extract(model, tokenizer, [clean], sites=[s.key for s in site_list], pooling="none", progress=False)
    device = next(model.parameters()).device
    clean_ids, corrupted_ids = (torch.tensor([i], device=device) for i in ids)
    clean_value = float(measure(_last_logits(model, clean_ids))[0])
    corrupted_value = float(measure(_last_logits(model, corrupted_ids))[0])
    span = clean_value - corrupted_value
    batch = corrupted_ids.expand(len(cols), T)
    where = torch.zeros(len(cols), T, dtype=torch.bool)
    where[torch.arange(len(cols)), cols] = True  # row r patched at position cols[r]
    rows = []
    tokens = clean_acts.str_tokens(0)
    for site in tqdm(site_list, desc="patching", disable=not progress):
        value = clean_acts.states(0, site.key)
        with patch(model, {site.key: Replace(value=value, positions=where)}):
            patched = measure(_last_logits(model, batch)).tolist()
        for p, score in zip(cols, patched, strict=True):
            rows.append({
                "site": site.name if site.kind != "hidden" else site.key, "block": site.block, "position": p,
                "token": tokens[p], "metric": score,
                "normalized": (score - corrupted_value) / span if span else float("nan"),
            })  # fmt: skip
    return PatchingResult(pd.DataFrame(rows), clean_value, corrupted_value, tokens)
