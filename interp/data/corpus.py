"""Parallel corpora: the same items (sentences, words) in many languages.

A :class:`ParallelCorpus` is a languages × items table of texts, aligned by
item id. :func:`load_parallel` reads one from

* ``"cldr"`` -- the embedded offline default: a real parallel lexicon from the
  CLDR data shipped with ``babel`` (territory, language, weekday and month
  names, aligned by CLDR key), for the 28 ILO languages CLDR covers
  (bjn_Latn, ban_Latn and min_Latn have no CLDR locale). Only keys present in
  every requested language are kept, so the items are truly parallel.
* ``"flores200:<dir>"`` -- the official FLORES-200 release layout,
  ``<dir>/<split>/<lang>.<split>``, one sentence per line (id = line number).
* ``"jsonl:<path>"`` -- rows ``{"lang": ..., "id": ..., "text": ...}``; any other field
  that every row has and that is the same in every language of an item (FLORES's
  ``split`` and ``topic`` in ``flores31.jsonl``) becomes item metadata
  (:attr:`ParallelCorpus.meta`), and ``split=`` keeps the items of some splits.
* any other string -- a Hugging Face dataset id, when online and ``datasets``
  is installed (``openlanguagedata/flores_plus`` or ``facebook/flores``).

Alignment is checked, never assumed: languages whose ids differ raise an
error listing what is missing or extra, unless ``align="intersect"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from interp.data.jsonl import iter_jsonl_objects
from interp.data.languages import ILO_CODES, ILO_LANGUAGES

__all__ = ["ParallelCorpus", "load_parallel", "AlignmentError"]


class AlignmentError(ValueError):
    """Languages of a parallel corpus do not share the same item ids."""


@dataclass(frozen=True)
class ParallelCorpus:
    """``texts[lang][j]`` is item ``ids[j]`` in language ``lang``.

    ``meta[name][j]`` is item ``j``'s value of a per-item field (the same in every
    language), e.g. ``meta["topic"]`` of FLORES-200 read from JSONL; empty if none.
    """

    langs: tuple[str, ...]
    ids: tuple
    texts: dict[str, tuple[str, ...]]
    source: str = ""
    meta: dict[str, tuple] = field(default_factory=dict)

    @property
    def n_langs(self) -> int:
        return len(self.langs)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def flat(self) -> tuple[list[str], list[str], list]:
        """``(texts, langs, ids)`` of every point, language-major (all of lang 0, then lang 1, ...)."""
        texts, langs, ids = [], [], []
        for lang in self.langs:
            texts.extend(self.texts[lang])
            langs.extend([lang] * self.n_items)
            ids.extend(self.ids)
        return texts, langs, ids

    def flat_meta(self, name: str) -> list:
        """Item field ``name`` of every point, in :meth:`flat` order (e.g. each point's topic)."""
        if name not in self.meta:
            raise KeyError(f"this corpus has no item field {name!r}; it has {sorted(self.meta) or 'none'}")
        return list(self.meta[name]) * self.n_langs

    def take(self, positions) -> ParallelCorpus:
        """The items at ``positions`` (0-based, in the given order) in every language, metadata kept."""
        positions = [int(p) for p in positions]
        bad = [p for p in positions if not 0 <= p < self.n_items]
        if bad:
            raise IndexError(f"item positions {bad[:5]} are out of range for {self.n_items} items")
        texts = {lang: tuple(values[p] for p in positions) for lang, values in self.texts.items()}
        meta = {name: tuple(values[p] for p in positions) for name, values in self.meta.items()}
        return ParallelCorpus(self.langs, tuple(self.ids[p] for p in positions), texts, self.source, meta)

    def head(self, n_items: int) -> ParallelCorpus:
        """The first ``n_items`` items in every language."""
        return self.take(range(min(n_items, self.n_items)))

    def where(self, name: str, values) -> ParallelCorpus:
        """The items whose field ``name`` is one of ``values`` (e.g. ``where("split", ["dev", "test"])``)."""
        wanted = {values} if isinstance(values, str) else set(values)
        column = self.meta.get(name)
        if column is None:
            raise KeyError(f"this corpus has no item field {name!r}; it has {sorted(self.meta) or 'none'}")
        unknown = wanted - set(column)
        if unknown:
            raise ValueError(f"no item has {name} in {sorted(unknown)}; the values are {sorted(set(column))}")
        return self.take([j for j, value in enumerate(column) if value in wanted])

    def subset(self, langs) -> ParallelCorpus:
        missing = [lang for lang in langs if lang not in self.texts]
        if missing:
            raise KeyError(f"languages {missing} are not in this corpus; it has {list(self.langs)}")
        texts = {lang: self.texts[lang] for lang in langs}
        return ParallelCorpus(tuple(langs), self.ids, texts, self.source, dict(self.meta))

    def __repr__(self) -> str:
        return f"ParallelCorpus({self.n_langs} languages × {self.n_items} items, source={self.source!r})"


def _align(
    rows: dict[str, dict], align: str, source: str, quiet: bool = False, item_meta: dict[str, dict] | None = None
) -> ParallelCorpus:
    """Build a corpus from ``{lang: {id: text}}`` (dicts keep insertion order) and ``{field: {id: value}}``."""
    if align not in ("strict", "intersect"):
        raise ValueError(f"align must be 'strict' or 'intersect', got {align!r}")
    if not rows:
        raise ValueError(f"{source}: no languages found")
    langs = list(rows)
    union = {}
    for lang in langs:
        union.update(dict.fromkeys(rows[lang]))
    common = [i for i in union if all(i in rows[lang] for lang in langs)]
    if len(common) != len(union):
        if align == "strict":
            lines = []
            for lang in langs:
                missing = [i for i in union if i not in rows[lang]]
                if missing:
                    lines.append(f"  {lang}: {len(missing)} missing (e.g. {missing[:3]})")
            raise AlignmentError(
                f"{source}: languages do not share the same items ({len(common)} common of {len(union)}):\n"
                + "\n".join(lines)
                + "\nfix the data, or pass align='intersect' to keep only the common items"
            )
        if not quiet:
            warnings.warn(
                f"{source}: kept the {len(common)} items common to all languages of {len(union)}", stacklevel=3
            )
    if not common:
        raise AlignmentError(f"{source}: the languages have no item in common")
    texts = {lang: tuple(rows[lang][i] for i in common) for lang in langs}
    meta = {name: tuple(values[i] for i in common) for name, values in (item_meta or {}).items()}
    return ParallelCorpus(tuple(langs), tuple(common), texts, source, meta)


def _check_langs(langs, available: list[str], source: str) -> list[str]:
    if langs is None:
        return available
    langs = [langs] if isinstance(langs, str) else list(langs)
    unknown = [lang for lang in langs if lang not in available]
    if unknown:
        raise KeyError(f"{source}: no data for {unknown}; available: {available}")
    if len(set(langs)) != len(langs):
        raise ValueError(f"duplicate languages in {langs}")
    return langs


def _from_cldr(langs, align: str) -> ParallelCorpus:
    try:
        from babel import Locale
        from babel.dates import get_day_names, get_month_names
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("the 'cldr' corpus needs babel (pip install babel)") from err
    covered = [lang.code for lang in ILO_LANGUAGES if lang.cldr]
    uncovered = [lang.code for lang in ILO_LANGUAGES if not lang.cldr]
    if langs is not None:
        wanted = [langs] if isinstance(langs, str) else list(langs)
        no_locale = [code for code in wanted if code in uncovered]
        if no_locale:
            raise KeyError(f"CLDR has no locale for {no_locale}; the 'cldr' corpus covers {covered}")
    langs = _check_langs(langs, covered, "cldr")
    cldr = {lang.code: lang.cldr for lang in ILO_LANGUAGES}
    rows = {}
    for code in langs:
        locale = Locale.parse(cldr[code])
        items = {}
        for key, name in locale.territories.items():
            if key.isalpha():  # "FR", not UN M.49 regions like "001"
                items[f"territory:{key}"] = name
        for key, name in locale.languages.items():
            if "_" not in key:
                items[f"language:{key}"] = name
        # "format" context: babel 2.18 resolves "stand-alone" aliases into shared root data, so
        # after one locale (zh) other locales read its month names
        for kind, getter in (("day", get_day_names), ("month", get_month_names)):
            for key, name in getter("wide", context="format", locale=locale).items():
                items[f"{kind}:{key}"] = name
        rows[code] = items
    # the CLDR corpus is defined as the keys every requested locale has (Sundanese's is sparse:
    # 42 items with all 28 languages, 702 without sun_Latn)
    return _align(rows, "intersect", "cldr", quiet=True)


def _from_flores(directory: str, langs, split: str, align: str) -> ParallelCorpus:
    root = Path(directory).expanduser() / split
    if not root.is_dir():
        raise FileNotFoundError(f"no FLORES-200 split directory {root} (expected <dir>/{split}/<lang>.{split})")
    available = sorted(p.name[: -len(split) - 1] for p in root.glob(f"*.{split}"))
    order = [code for code in ILO_CODES if code in available] + [c for c in available if c not in ILO_CODES]
    langs = _check_langs(langs, order, f"flores200:{directory}")
    rows = {}
    for code in langs:
        # one sentence per "\n" line: str.splitlines() would also cut at U+2028, U+0085, \x0c, ...
        # inside a sentence and shift every later id
        text = (root / f"{code}.{split}").read_text(encoding="utf-8")
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        if lines and lines[-1] == "":
            lines.pop()  # the final newline ends the last line, it does not start another
        rows[code] = dict(enumerate(lines))
    return _align(rows, align, f"flores200:{directory}")


def _item_fields(rows: list[dict], langs: list[str]) -> dict[str, dict]:
    """``{field: {id: value}}`` of the extra fields that are item metadata.

    A field qualifies if every row of ``langs`` has it with a scalar value and every
    language of an item gives the same value (FLORES's ``split`` and ``topic``).
    """
    wanted = set(langs)
    rows = [row for row in rows if row["lang"] in wanted]
    names = set.intersection(*(set(row) for row in rows)) - {"lang", "id", "text"} if rows else set()
    fields = {}
    for name in sorted(names):
        values: dict = {}
        for row in rows:
            value = row[name]
            if isinstance(value, (list, dict)) or values.setdefault(row["id"], value) != value:
                break
        else:
            fields[name] = values
    return fields


def _split_filter(fields: dict[str, dict], split, path: str) -> set | None:
    """The item ids of the requested split(s) of a JSONL corpus (None: all items)."""
    if split is None:
        return None
    wanted = {s.strip() for s in split.split(",")} if isinstance(split, str) else set(split)
    if "split" not in fields:
        raise ValueError(
            f"jsonl:{path}: split={split!r} asks for items of a split, but the rows have no 'split' field "
            "(the same in every language of an item); pass split=None to read every row"
        )
    found = set(fields["split"].values())
    unknown = wanted - found
    if unknown:
        raise ValueError(f"jsonl:{path}: no item has split {sorted(unknown)}; the splits are {sorted(found)}")
    return {i for i, value in fields["split"].items() if value in wanted}


def _from_jsonl(path: str, langs, align: str, split=None) -> ParallelCorpus:
    rows: dict[str, dict] = {}
    raw = []
    for number, row in iter_jsonl_objects(path):
        missing = {"lang", "id", "text"} - row.keys()
        if missing:
            raise ValueError(f"{path}:{number}: row lacks {sorted(missing)}")
        if not isinstance(row["text"], str) or isinstance(row["id"], (list, dict)):
            raise ValueError(f"{path}:{number}: 'text' must be a string and 'id' a string or number")
        table = rows.setdefault(row["lang"], {})
        if row["id"] in table:
            raise ValueError(f"{path}:{number}: duplicate id {row['id']!r} for {row['lang']}")
        table[row["id"]] = row["text"]
        raw.append(row)
    langs = _check_langs(langs, list(rows), f"jsonl:{path}")
    fields = _item_fields(raw, langs)
    keep = _split_filter(fields, split, path)
    if keep is not None:
        rows = {code: {i: text for i, text in rows[code].items() if i in keep} for code in langs}
    return _align({code: rows[code] for code in langs}, align, f"jsonl:{path}", item_meta=fields)


def _from_hub(name: str, langs, split: str, align: str) -> ParallelCorpus:  # pragma: no cover - needs network
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"loading {name!r} from the Hugging Face hub needs 'datasets' (pip install datasets)"
        ) from err
    langs = list(ILO_CODES) if langs is None else list(langs)
    rows = {}
    for code in langs:
        if "flores_plus" in name:
            data = datasets.load_dataset(name, code, split=split)
            rows[code] = {row["id"]: row["text"] for row in data}
        else:
            data = datasets.load_dataset(name, code, split=split, trust_remote_code=True)
            rows[code] = {row["id"]: row["sentence"] for row in data}
    return _align(rows, align, name)


def load_parallel(source: str = "cldr", langs=None, split: str | None = None, align: str = "strict") -> ParallelCorpus:
    """Load a parallel corpus (see module docstring for the sources).

    Args:
        source: ``"cldr"``, ``"flores200:<dir>"``, ``"jsonl:<path>"`` or a hub dataset id.
        langs: language codes to keep, in this order (default: all available,
            in the ILO order where applicable).
        split: a FLORES-200 directory's or the hub's split (default ``"dev"``: 997
            sentences; ``"devtest"``: 1012); for JSONL, the value(s) of the rows'
            ``split`` field to keep (``"dev,test"`` or a list; default: every row).
            Ignored by ``"cldr"``.
        align: ``"strict"`` (error on misaligned languages) or ``"intersect"``.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a string, got {type(source).__name__}")
    if source == "cldr":
        return _from_cldr(langs, align)
    if source.startswith("flores200:"):
        return _from_flores(source.split(":", 1)[1], langs, split or "dev", align)
    if source.startswith("jsonl:"):
        return _from_jsonl(source.split(":", 1)[1], langs, align, split)
    if source.endswith(".jsonl") and Path(source).is_file():
        return _from_jsonl(source, langs, align, split)
    return _from_hub(source, langs, split or "dev", align)
