"""Measurement: how much the ε = 1e-6 of the CKA / CKNNA denominators changes the value.

gemma-3-270m (embedded default), all 19 hidden states, mean pooling, the 930 UDHR texts of
``../shared/data/udhr30.jsonl`` (30 languages × 31 articles) -> activations ``[19, 930, 640]``
(the same extraction and ``--cache`` file format as ``benchmarks/similarity.py``).

For raw rows and for L2-normalised rows, all 19 × 19 layer pairs of
:func:`interp.similarity.layer_similarity` with ``"cka"`` (biased HSIC), ``"unbiased_cka"`` and
``"cknna"`` (k = 10; CKNNA normalises rows itself, so its two settings coincide), each with
``epsilon=1e-6`` and ``epsilon=0``. Reported: min / median / max of the self-terms HSIC(K, K) of the
19 layers (for CKNNA the masked self-terms HSIC_u(M_A∘K, M_A∘K)), and of the relative change
``(value(ε=0) − value(ε)) / value(ε=0)`` over the 361 entries. Since
``value(ε) = HSIC(K, L) / (sqrt(HSIC(K, K)·HSIC(L, L)) + ε)`` the relative change is
``ε / (sqrt(HSIC(K, K)·HSIC(L, L)) + ε)`` -- the script checks that too -- so it depends only on the
self-terms: ε matters where HSIC(K, K) is not ≫ ε, i.e. for the *unbiased* estimator (divided by
N(N−3)) on *unit-norm* rows.

usage: python benchmarks/cka_epsilon.py [--data PATH] [--k 10] [--cache acts.pt] [--epsilon 1e-6]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import interp
from interp.data import load_parallel
from interp.similarity import hsic, layer_similarity
from interp.similarity.knn_metrics import kernel_at_neighbors, masked_hsic, neighbor_lists

UDHR = Path(__file__).resolve().parents[2] / "shared" / "data" / "udhr30.jsonl"


def activations(data: str, cache: str | None, items: int | None = None) -> torch.Tensor:
    """``[19, N, 640]`` mean-pooled gemma-3-270m hidden states of a JSON Lines parallel corpus (``items``:
    its first items only; ``cache``: reuse / save the tensor there, as ``benchmarks/similarity.py``)."""
    corpus = load_parallel(f"jsonl:{data}")
    corpus = corpus if items is None else corpus.head(items)
    texts, langs, ids = corpus.flat()
    if cache and os.path.isfile(cache):
        acts = torch.load(cache)
        print(f"{corpus}: activations {tuple(acts.shape)} from {cache}")
        return acts
    model, tok = interp.load_model()
    tic = time.perf_counter()
    acts = interp.extract(model, tok, texts, layers="all", pooling="mean", labels=langs, ids=ids,
                          batch_size=8, progress=False).tensor  # fmt: skip
    print(f"{corpus}: activations {tuple(acts.shape)}, extraction {time.perf_counter() - tic:.1f} s")
    if cache:
        torch.save(acts, cache)
    return acts


def spread(values: torch.Tensor) -> str:
    v = values.double().flatten()
    return f"min {v.min():.4g}  median {v.median():.4g}  max {v.max():.4g}"


def argmax_off(values: torch.Tensor) -> str:
    masked = values.clone().fill_diagonal_(-float("inf"))
    row, col = divmod(int(masked.argmax()), values.shape[1])
    return f"({row}, {col}) = {float(values[row, col]):.4f}"


def relative_change(exact: torch.Tensor, with_eps: torch.Tensor) -> torch.Tensor:
    return (exact - with_eps) / exact


def report(name: str, self_terms: torch.Tensor, exact: torch.Tensor, with_eps: torch.Tensor, eps: float) -> dict:
    rel = relative_change(exact, with_eps)
    s = self_terms.double()
    predicted = eps / (torch.sqrt(s[:, None] * s[None, :]) + eps)  # ε / (sqrt(HSIC_K·HSIC_L) + ε)
    assert torch.allclose(rel, predicted, rtol=1e-6, atol=1e-12), name
    diagonal = torch.diagonal(with_eps)
    off = ~torch.eye(len(s), dtype=torch.bool)
    print(f"  {name}")
    print(f"    HSIC(K, K), {len(s)} layers:        {spread(s)}")
    print(f"    relative change, all {rel.numel()}:    {spread(rel)}  (mean {rel.mean():.3g})")
    print(f"    relative change, {int(off.sum())} off-diag: {spread(rel[off])}")
    print(f"    value(X, X) with ε:           {spread(diagonal)}  (1 with ε = 0)")
    share = float((rel > 0.01).double().mean())
    print(f"    entries lowered by more than 1 %: {100 * share:.1f} %")
    print(f"    off-diagonal argmax: ε = 0 {argmax_off(exact)}, ε = {eps:g} {argmax_off(with_eps)}")
    worst = int(s.argmin())
    print(f"    smallest self-term: layer {worst}, value(X, X) = {float(with_eps[worst, worst]):.4f}")
    return {"self": s, "relative": rel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(UDHR))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--epsilon", type=float, default=1e-6)
    parser.add_argument("--cache", help="save / reuse the activations tensor here (skips extraction on reruns)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")  # fmt: skip
    acts = activations(args.data, args.cache)
    eps, k = args.epsilon, args.k
    n = acts.shape[1]
    print(f"\nε = {eps:g} vs ε = 0, all {acts.shape[0]}x{acts.shape[0]} layer pairs, N = {n}, D = {acts.shape[2]}")
    for rows, x in (("raw rows", acts), ("L2-normalised rows", F.normalize(acts.double(), dim=-1))):
        print(f"\n{rows} (row norms: {spread(x.double().norm(dim=-1))})")
        for metric, unbiased in (("cka", False), ("unbiased_cka", True)):
            self_terms = torch.tensor([hsic(layer, layer, unbiased=unbiased) for layer in x])
            exact = layer_similarity(x, metric, epsilon=0.0, progress=False).values
            with_eps = layer_similarity(x, metric, epsilon=eps, progress=False).values
            label = "biased CKA, HSIC_b = tr(KHLH)" if not unbiased else "unbiased CKA, HSIC_u (Song Eq. 5)"
            report(label, self_terms, exact, with_eps, eps)
    # CKNNA normalises the rows itself: one setting. Its self-terms are the masked unbiased HSICs.
    lists = neighbor_lists(acts, k)
    values = kernel_at_neighbors(acts, lists, normalize=True)
    self_terms = masked_hsic(lists, values, lists, values)
    exact = layer_similarity(acts, "cknna", k=k, epsilon=0.0, progress=False).values
    with_eps = layer_similarity(acts, "cknna", k=k, epsilon=eps, progress=False).values
    print(f"\nCKNNA, k = {k} (rows L2-normalised by cknna itself)")
    report("CKNNA, HSIC_u(M∘K, M∘L)", self_terms, exact, with_eps, eps)


if __name__ == "__main__":
    main()
