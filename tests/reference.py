"""Independent reference: Hugging Face ``output_hidden_states``, one text at a
time, pooled in float64 straight from the definitions (no interp code)."""

from __future__ import annotations

import torch


def reference_states(model, tokenizer, texts: list[str], pooling: str) -> list[torch.Tensor]:
    """Per text: ``[L+1, D]`` (pooled) or ``[L+1, T, D]`` (``"none"``), float64."""
    special_ids = set(tokenizer.all_special_ids)
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            states = torch.stack(model(input_ids=ids, output_hidden_states=True).hidden_states)[:, 0].double()
            if pooling == "mean":
                out.append(states.mean(dim=1))
            elif pooling == "mean_no_special":
                keep = torch.tensor([i not in special_ids for i in ids[0].tolist()])
                out.append(states[:, keep].mean(dim=1))
            elif pooling == "last":
                out.append(states[:, -1])
            else:
                out.append(states)
    return out
