"""``interp.extract_generate``: the sites of the tokens a model generates, recorded while it generates.

Flow: tokenise each prompt alone -> left-padded batches (generation appends on
the right) -> torch hooks on every site (:class:`~interp.extraction.backends.hf.SiteHook`,
attention patterns through :func:`~interp.extraction.backends.base.pattern_weights`)
record each forward call of ``model.generate`` -- the prompt's prefill, then one
position per step -- and one more step feeds the last generated token (whose
states ``generate`` never computes) through the returned KV cache -> the calls
are concatenated along the sequence (patterns' key axes padded to the final
length, then put in text positions) -> one :class:`Activations` row per token of
prompt + completion, cut after each sequence's end-of-sequence token.

Everything runs inside :func:`interp.models.guard.preserved` (hooks removed,
attention implementation restored, also on an exception). TransformerLens and
nnsight have their own generation loops; this one uses plain torch hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from interp._validation import check_int, check_texts
from interp.extraction.activations import Activations, TokenTable
from interp.extraction.backends.base import input_device, pattern_weights
from interp.extraction.backends.hf import SiteHook
from interp.extraction.collect import align_keys
from interp.extraction.sites import Site, resolve_request
from interp.models.adapter import get_adapter, resolve_path
from interp.models.attention import attention_hooks
from interp.models.guard import preserved
from interp.models.inputs import cache_kwarg, collate, pad_id, token_strings, tokenize
from interp.models.interop import unwrap_model

__all__ = ["extract_generate", "Generation"]


@dataclass
class Generation:
    """What :func:`extract_generate` returns.

    Attributes:
        acts: per-token :class:`Activations` (``pooling="none"``) of prompt + completion
            of every prompt: ``acts.states(j, site)`` is ``[n_prompt_j + n_new_j, *feature]``.
        prompt_lengths: tokens of each prompt (BOS included).
        completions: the generated text of each prompt (special tokens skipped).
    """

    acts: Activations
    prompt_lengths: list[int]
    completions: list[str]

    def new_tokens(self, j: int) -> torch.Tensor:
        """Token ids generated for prompt ``j``: ``[n_new]``."""
        return self.acts.tokens(j)[self.prompt_lengths[j] :]

    def generated(self, j: int, site: int | str) -> torch.Tensor:
        """``site`` at the generated tokens of prompt ``j``: ``[n_new, *feature]``."""
        return self.acts.states(j, site)[self.prompt_lengths[j] :]


class StepRecorder:
    """Keeps every forward call's tensor per site (``SiteHook``'s recorder during generation)."""

    def __init__(self, sites: list[Site]):
        self.sites = {site.key: site for site in sites}
        self.steps: dict[int | str, list[torch.Tensor]] = {key: [] for key in self.sites}

    def record(self, key: int | str, raw: torch.Tensor) -> None:
        self.steps[key].append(self.sites[key].canonical(raw).detach())

    def joined(self, key: int | str, width: int) -> torch.Tensor:
        """The calls concatenated along the sequence: ``[B, width, *feature]`` (pattern keys padded to ``width``)."""
        parts = self.steps[key]
        if self.sites[key].is_pattern:
            parts = [torch.nn.functional.pad(p, (0, width - p.shape[-1])) for p in parts]
        return torch.cat(parts, dim=1)


def _final_step(model: nn.Module, sequences: torch.Tensor, mask: torch.Tensor, cache) -> None:
    """Feed the last generated token through the KV cache, so its sites are recorded too."""
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -1:]
    model(input_ids=sequences[:, -1:], attention_mask=mask, position_ids=positions, use_cache=True,
          logits_to_keep=1, **{cache_kwarg(model): cache})  # fmt: skip


def _generate_batch(model, adapter, tokens, rows, sites, pad, max_new_tokens, kwargs):
    """Run one left-padded batch; return (per-site joined [B, T_total, ...], sequences, full mask)."""
    batch = collate(tokens, rows, pad, "left")
    device = input_device(adapter.embed)
    recorder = StepRecorder(sites)
    with contextlib.ExitStack() as stack:
        for site in sites:
            handle = SiteHook(site, recorder).register(resolve_path(model, site.module))
            stack.callback(handle.remove)
        mask = batch.attention_mask.to(device)
        out = model.generate(
            input_ids=batch.input_ids.to(device), attention_mask=mask, max_new_tokens=max_new_tokens,
            pad_token_id=pad, return_dict_in_generate=True, **kwargs,
        )  # fmt: skip
        sequences = out.sequences
        n_new = sequences.shape[1] - mask.shape[1]
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], n_new)], dim=1)
        if n_new:
            _final_step(model, sequences, full_mask, getattr(out, "cache", None) or out.past_key_values)
    width = sequences.shape[1]
    return {site.key: recorder.joined(site.key, width) for site in sites}, sequences, full_mask, n_new


def _kept(sequence: torch.Tensor, n_prompt_cols: int, eos: set[int]) -> int:
    """How many generated tokens of a row to keep: through its first end-of-sequence token."""
    generated = sequence[n_prompt_cols:].tolist()
    for i, token in enumerate(generated):
        if token in eos:
            return i + 1
    return len(generated)


def extract_generate(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str],
    sites: str | int | Sequence | Callable[[str], bool] | None = None,
    layers: str | int | Sequence[int] | None = None,
    max_new_tokens: int = 20,
    batch_size: int = 8,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    **generate_kwargs,
) -> Generation:
    """Generate from each prompt and record ``sites`` at every prompt and generated token.

    Args:
        model: a Hugging Face causal LM of a known family (or an nnsight ``LanguageModel`` around one).
        tokenizer: its tokenizer (each prompt tokenised alone, BOS included).
        prompts: list of strings.
        sites, layers: as in :func:`interp.extract` (default: every hidden state).
        max_new_tokens: tokens to generate per prompt (fewer if it ends with EOS).
        batch_size: prompts per ``generate`` call (left-padded).
        dtype: dtype of the returned tensors.
        generate_kwargs: passed to ``model.generate`` (default greedy: ``do_sample=False``).

    Returns:
        :class:`Generation` (``.acts``, ``.generated(j, site)``, ``.completions``).
    """
    prompts = check_texts(prompts, "prompts")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    model = unwrap_model(model)
    adapter = get_adapter(model)
    if adapter.lm_head is None:
        raise ValueError("extract_generate needs a causal LM with its LM head (a ...ForCausalLM model)")
    site_list = resolve_request(adapter, layers, sites)
    tokens = tokenize(tokenizer, prompts)
    pad = pad_id(tokenizer)
    eos_id = generate_kwargs.get("eos_token_id", getattr(model.generation_config, "eos_token_id", None))
    eos = set(eos_id if isinstance(eos_id, list) else [] if eos_id is None else [eos_id])
    generate_kwargs.setdefault("do_sample", False)
    per_text: list[dict] = []
    sequences_out: list[list[int]] = []
    with preserved(model), contextlib.ExitStack() as stack, torch.no_grad():
        model.eval()
        pattern_blocks = sorted({s.block for s in site_list if s.is_pattern})
        if pattern_blocks:
            stack.enter_context(attention_hooks(model, dict.fromkeys(pattern_blocks, pattern_weights)))
        batches = [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
        for rows in tqdm(batches, desc="extract_generate", disable=not progress):
            joined, sequences, mask, n_new = _generate_batch(
                model, adapter, tokens, rows, site_list, pad, max_new_tokens, generate_kwargs
            )
            prompt_cols = sequences.shape[1] - n_new
            for b in range(len(rows)):
                keep = _kept(sequences[b], prompt_cols, eos)
                real = mask[b].bool().clone()
                real[prompt_cols + keep :] = False
                width = int(real.sum())
                states = {}
                for site in site_list:
                    values = joined[site.key][b : b + 1]
                    if site.is_pattern:
                        values = align_keys(values, real[None], width)
                    states[site.key] = values[0][real].to("cpu", dtype)
                per_text.append(states)
                sequences_out.append(sequences[b][real].tolist())
    prompt_lengths = [len(t.input_ids) for t in tokens]
    lengths = torch.tensor([len(s) for s in sequences_out])
    flat = [i for s in sequences_out for i in s]
    values = {}
    for site in site_list:
        rows = [text[site.key] for text in per_text]
        if site.is_pattern:  # one key width for all: the longest sequence
            width = int(lengths.max())
            rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]
        values[site.key] = torch.cat(rows)
    acts = Activations(
        values=values, sites=[s.key for s in site_list], ids=list(range(len(prompts))), pooling="none",
        lengths=lengths, model_name=str(getattr(model, "name_or_path", "") or type(model).__name__),
        tokens=TokenTable(torch.tensor(flat, dtype=torch.int64), lengths, token_strings(tokenizer, flat)),
        n_hidden_states=adapter.n_hidden_states, meta={"generate": dict(max_new_tokens=max_new_tokens)},
    )  # fmt: skip
    pairs = zip(sequences_out, prompt_lengths, strict=True)
    completions = [tokenizer.decode(seq[n:], skip_special_tokens=True) for seq, n in pairs]
    return Generation(acts, prompt_lengths, completions)
