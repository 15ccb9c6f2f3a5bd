"""Scoring WhatsUp / VSR generations: the official rule and a robust rule, side by side.

**Official rule** (shiqichen17/AdaptVis ``model_zoo/llava15.py``, ``get_out_scores_wh_batched``):
a generation ``gen`` is correct for gold ``g`` iff
``(g in gen or g.lower() in gen.lower()) and not (g.lower() == "on" and "front" in gen.strip().lower())``.
It is a case-insensitive *substring* test over the whole generation, so it has false
positives: gold ``"On"`` matches "relati**on**", "**on**e", "fr**on**t" (the one case the
exception catches), and a generation naming several options ("left or right?") is right
for all of them. Reported accuracy is ``correct / N``.

**Robust rule** (ours): the options are parsed from the question ("Answer with left,
right, on or under."); the prediction is the option that occurs *earliest* in the
generation as a whole word or phrase (case-insensitive; ties go to the longer option),
with one exception: an "on" that introduces another option ("on the left", "on top")
is not read as "on". A sample is correct iff the prediction equals the gold; a
generation naming no option has prediction ``None`` and counts as wrong (reported as
``unparsed``). For open questions (``VSR_with_answer``: "Answer with one word or
phrase") the gold phrase must occur as a whole phrase.

**VSR yes/no** (``get_judge_scores_vsr_batched``): the official rule is per label, with
case-sensitive substrings and no precedence between them -- a positive is a TP iff
``'Yes' in gen`` (else FN), a negative a TN iff ``'No' in gen`` (else FP); so "No"
inside "Not" or "None" counts, "yes" does not, and "Yes and No" is right for both
labels. The robust rule reads the earliest whole word ``yes``/``no`` (any case); an
answer with neither counts as wrong (FN for a positive, FP for a negative). Metrics:
EM = (TP+TN)/N; the paper's "F1" = harmonic mean of TPR = TP/(TP+FN) and TNR =
TN/(TN+FP) (the code calls them precision and recall); the standard F1 with "yes" as
the positive class = 2TP/(2TP+FP+FN).

**Pair / set accuracy** (Controlled_Images_A/B, whatsup_vlms ``evaluate_scores``): the
four images of one object pair form a set; {left, right} and {on, under} (A) or
{front, behind} (B) are its two pairs. A pair (set) is correct when all its members
are. The official code divides by N/2 and N/4 with N the evaluated rows; we divide by
the number of complete pairs / sets among the evaluated rows (identical on a full
dataset; on the official 20 % split most pairs are incomplete and the official
denominator understates the accuracy -- ``official_denominator=True`` reproduces it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from interp.vlm.eval.datasets import SpatialDataset

__all__ = [
    "SpatialScores",
    "official_correct",
    "official_yes_no",
    "pair_set_accuracy",
    "robust_correct",
    "robust_prediction",
    "robust_yes_no",
    "score_vsr",
    "score_whatsup",
    "yes_no_metrics",
]

_PAIRS = (("left", "right"), ("on", "under"), ("front", "behind"))


def official_correct(generation: str, answer: str) -> bool:
    """The official WhatsUp rule (substring, with the on/front exception). See the module docstring."""
    return (answer in generation or answer.lower() in generation.lower()) and not (
        answer.lower() == "on" and "front" in generation.strip().lower()
    )


def _phrase_re(phrase: str) -> re.Pattern:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def robust_prediction(generation: str, options: Sequence[str]) -> str | None:
    """The option (lower-case) named earliest in ``generation`` as a whole word, or ``None``."""
    opts = [o.lower() for o in options]
    others = "|".join(re.escape(o) for o in opts if o != "on")
    skip_on = re.compile(r"on\s+(?:the\s+)?(?:" + others + r")(?!\w)", re.IGNORECASE) if others else None
    best: tuple[int, int, str] | None = None
    for opt in opts:
        for m in _phrase_re(opt).finditer(generation):
            if opt == "on" and skip_on is not None and skip_on.match(generation, m.start()):
                continue
            key = (m.start(), -len(opt), opt)
            if best is None or key < best:
                best = key
            break
    return None if best is None else best[2]


def _with_gold(options: Sequence[str], answer: str) -> tuple[str, ...]:
    # a gold missing from the listed options (VG_QA_two_obj id 56: "Above" for "... top, or bottom") still counts
    opts = tuple(o.lower() for o in options)
    return opts + (answer.lower(),) if opts and answer.lower() not in opts else opts


def robust_correct(generation: str, answer: str, options: Sequence[str] = ()) -> bool:
    """Robust rule: earliest whole-word option equals the gold; open questions: gold phrase present.

    A gold answer missing from ``options`` is added to them.
    """
    if not options:
        return _phrase_re(answer).search(generation) is not None
    return robust_prediction(generation, _with_gold(options, answer)) == answer.lower()


def official_yes_no(generation: str, label: int) -> bool:
    """Official VSR rule: correct iff ``'Yes' in gen`` (label 1) or ``'No' in gen`` (label 0), case-sensitive."""
    return ("Yes" in generation) if label == 1 else ("No" in generation)


_YES_NO_RE = re.compile(r"(?<!\w)(yes|no)(?!\w)", re.IGNORECASE)


def robust_yes_no(generation: str) -> int | None:
    """1 for yes, 0 for no (earliest whole word, any case), ``None`` when neither appears."""
    m = _YES_NO_RE.search(generation)
    return None if m is None else int(m.group(1).lower() == "yes")


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan


def yes_no_metrics(tp: int, tn: int, fp: int, fn: int) -> dict[str, float]:
    """EM, TPR, TNR, the paper's "F1" (harmonic mean of TPR and TNR), precision, recall and standard F1."""
    tpr, tnr = _div(tp, tp + fn), _div(tn, tn + fp)
    return {
        "em": _div(tp + tn, tp + tn + fp + fn),
        "tpr": tpr,
        "tnr": tnr,
        "paper_f1": _div(2 * tpr * tnr, tpr + tnr),
        "precision": _div(tp, tp + fp),
        "recall": tpr,
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "tn": tn,
        "fp": fp,
        "fn": fn,
    }


def _relation(answer: str) -> str:
    a = answer.strip().lower()
    return "front" if a in ("in-front", "in front") else a


def pair_set_accuracy(
    correct: Sequence[bool], groups: Sequence[str], answers: Sequence[str], *, official_denominator: bool = False
) -> dict[str, float]:
    """Pair and set accuracy of Controlled_Images rows (see the module docstring).

    ``groups[i]`` names the object pair of row ``i`` and ``answers[i]`` its gold relation.
    Returns ``pair_accuracy``, ``set_accuracy``, ``n_pairs``, ``n_sets`` (units scored).
    """
    if not len(correct) == len(groups) == len(answers):
        raise ValueError(f"correct, groups, answers differ in length: {len(correct)}, {len(groups)}, {len(answers)}")
    table: dict[str, dict[str, bool]] = {}
    for ok, g, a in zip(correct, groups, answers, strict=True):
        if g is None:
            raise ValueError("pair/set accuracy needs a group for every row (Controlled_Images datasets only)")
        rel = _relation(a)
        if rel in table.setdefault(g, {}):
            raise ValueError(f"group {g!r} has relation {rel!r} twice; groups must name one object pair")
        table[g][rel] = bool(ok)
    pairs = [[d[r] for r in p] for d in table.values() for p in _PAIRS if all(r in d for r in p)]
    sets = [list(d.values()) for d in table.values() if len(d) == 4]
    n = len(correct)
    pair_den, set_den = (n / 2, n / 4) if official_denominator else (len(pairs), len(sets))
    return {
        "pair_accuracy": _div(sum(all(p) for p in pairs), pair_den),
        "set_accuracy": _div(sum(all(s) for s in sets), set_den),
        "n_pairs": len(pairs),
        "n_sets": len(sets),
    }


@dataclass(frozen=True)
class SpatialScores:
    """Per-sample judgements (``samples``) and a tidy ``summary``: columns rule, metric, value, n."""

    samples: pd.DataFrame
    summary: pd.DataFrame

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{rule: {metric: value}}``."""
        return {r: dict(zip(g.metric, g.value, strict=True)) for r, g in self.summary.groupby("rule", sort=False)}

    def by_answer(self) -> pd.DataFrame:
        """Accuracy of both rules per gold answer (the official per-preposition breakdown)."""
        s = self.samples
        return s.groupby(s.answer.str.lower())[["official", "robust"]].agg(["mean", "size"])


def _check_lengths(generations: Sequence[str], n: int, what: str) -> None:
    if isinstance(generations, str):
        raise TypeError("generations must be a list of strings, one per sample, not a single string")
    if n == 0:
        raise ValueError(f"no {what} to score")
    if len(generations) != n:
        raise ValueError(f"{len(generations)} generations for {n} {what}; pass one generation per sample")


def score_whatsup(
    generations: Sequence[str],
    dataset: SpatialDataset | Sequence[str],
    options: Sequence[Sequence[str]] | None = None,
) -> SpatialScores:
    """Score WhatsUp generations with both rules.

    Args:
        generations: decoded answers (prompt excluded), one per sample.
        dataset: a :class:`SpatialDataset` (answers, options and groups come from it), or
            the gold answers.
        options: per-sample options when ``dataset`` is a list of answers (default: none,
            i.e. whole-phrase match of the gold).

    ``summary`` has ``accuracy`` for rules ``official`` and ``robust``, ``unparsed`` for the
    robust rule and, for Controlled datasets, ``pair_accuracy`` and ``set_accuracy`` (the
    official rule divides by N/2 and N/4 like the official code, so its numbers on a subset
    such as the 80 % test split are the paper's; the robust rule divides by the complete
    pairs / sets present).
    """
    if isinstance(dataset, SpatialDataset):
        answers = dataset.answers
        options = [s.options for s in dataset]
        groups = [s.group for s in dataset]
        ids = dataset.ids
    else:
        answers = list(dataset)
        options = [tuple(o) for o in options] if options is not None else [()] * len(answers)
        groups, ids = [None] * len(answers), list(range(len(answers)))
    _check_lengths(generations, len(answers), "answers")
    if len(options) != len(answers):
        raise ValueError(f"{len(options)} option lists for {len(answers)} answers")
    rows = []
    for i, (gen, ans, opts) in enumerate(zip(generations, answers, options, strict=True)):
        if opts:
            pred = robust_prediction(gen, _with_gold(opts, ans))
        else:
            pred = ans.lower() if robust_correct(gen, ans) else None
        rows.append(
            {
                "id": ids[i],
                "answer": ans,
                "generation": gen,
                "official": official_correct(gen, ans),
                "robust_prediction": pred,
                "robust": robust_correct(gen, ans, opts),
                "group": groups[i],
            }
        )
    samples = pd.DataFrame(rows)
    n = len(samples)
    summary = []
    for rule in ("official", "robust"):
        summary.append((rule, "accuracy", _div(samples[rule].sum(), n), n))
        if rule == "robust":
            summary.append((rule, "unparsed", _div(samples.robust_prediction.isna().sum(), n), n))
        if n and all(g is not None for g in groups):
            # the official code divides by N/2 and N/4 (equal to the pair/set counts on a full dataset)
            ps = pair_set_accuracy(samples[rule].tolist(), groups, answers, official_denominator=rule == "official")
            summary.append((rule, "pair_accuracy", ps["pair_accuracy"], ps["n_pairs"]))
            summary.append((rule, "set_accuracy", ps["set_accuracy"], ps["n_sets"]))
    return SpatialScores(samples, pd.DataFrame(summary, columns=["rule", "metric", "value", "n"]))


def score_vsr(generations: Sequence[str], labels: SpatialDataset | Sequence[int]) -> SpatialScores:
    """Score VSR yes/no generations (labels 1 = true caption) with both rules.

    ``summary`` holds, per rule, ``em``, ``tpr``, ``tnr``, ``paper_f1``, ``precision``,
    ``recall``, ``f1`` and the counts ``tp``/``tn``/``fp``/``fn`` (plus ``unparsed`` for the robust rule).
    """
    if isinstance(labels, SpatialDataset):
        if any(s.label is None for s in labels):
            raise ValueError("this dataset has no yes/no labels; load it with load_vsr_judge")
        labels = [s.label for s in labels]
    labels = [int(x) for x in labels]
    if any(x not in (0, 1) for x in labels):
        raise ValueError("VSR labels must be 0 (false caption) or 1 (true caption)")
    _check_lengths(generations, len(labels), "labels")
    parsed = [robust_yes_no(g) for g in generations]
    samples = pd.DataFrame(
        {
            "label": labels,
            "generation": list(generations),
            "official": [official_yes_no(g, y) for g, y in zip(generations, labels, strict=True)],
            "robust_prediction": parsed,
            "robust": [p == y for p, y in zip(parsed, labels, strict=True)],
        }
    )
    summary = []
    for rule in ("official", "robust"):
        pos, ok = samples.label == 1, samples[rule]
        counts = int((pos & ok).sum()), int((~pos & ok).sum()), int((~pos & ~ok).sum()), int((pos & ~ok).sum())
        for metric, value in yes_no_metrics(*counts).items():
            summary.append((rule, metric, value, len(samples)))
        if rule == "robust":
            summary.append((rule, "unparsed", _div(sum(p is None for p in parsed), len(parsed)), len(samples)))
    return SpatialScores(samples, pd.DataFrame(summary, columns=["rule", "metric", "value", "n"]))
