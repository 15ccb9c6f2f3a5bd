"""The 31 languages of the ILO paper (FLORES-200 codes, in the official ``LANGS`` order).

Family and script annotate each code (standard classification; the grouping
is ours, not the paper's). ``cldr`` is the CLDR/babel locale used by the
embedded offline corpus, or None where CLDR has no locale (bjn, ban, min).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Language", "ILO_LANGUAGES", "ILO_CODES", "language", "by_family", "family_groups", "OTHER_FAMILY"]

#: The family given to codes that are not ILO languages (and, in :func:`family_groups`, to merged small families).
OTHER_FAMILY = "other"


@dataclass(frozen=True)
class Language:
    code: str  # FLORES-200, e.g. "eng_Latn"
    name: str
    family: str
    script: str
    cldr: str | None


ILO_LANGUAGES: tuple[Language, ...] = (
    Language("swe_Latn", "Swedish", "IE Germanic", "Latn", "sv"),
    Language("nld_Latn", "Dutch", "IE Germanic", "Latn", "nl"),
    Language("bjn_Latn", "Banjar", "Austronesian", "Latn", None),
    Language("jav_Latn", "Javanese", "Austronesian", "Latn", "jv"),
    Language("tgl_Latn", "Tagalog", "Austronesian", "Latn", "fil"),
    Language("ind_Latn", "Indonesian", "Austronesian", "Latn", "id"),
    Language("rus_Cyrl", "Russian", "IE Slavic", "Cyrl", "ru"),
    Language("ces_Latn", "Czech", "IE Slavic", "Latn", "cs"),
    Language("dan_Latn", "Danish", "IE Germanic", "Latn", "da"),
    Language("eng_Latn", "English", "IE Germanic", "Latn", "en"),
    Language("ukr_Cyrl", "Ukrainian", "IE Slavic", "Cyrl", "uk"),
    Language("tel_Telu", "Telugu", "Dravidian", "Telu", "te"),
    Language("srp_Cyrl", "Serbian", "IE Slavic", "Cyrl", "sr_Cyrl"),
    Language("fra_Latn", "French", "IE Romance", "Latn", "fr"),
    Language("tha_Thai", "Thai", "Kra-Dai", "Thai", "th"),
    Language("ban_Latn", "Balinese", "Austronesian", "Latn", None),
    Language("zho_Hans", "Chinese (Simplified)", "Sino-Tibetan", "Hans", "zh_Hans"),
    Language("deu_Latn", "German", "IE Germanic", "Latn", "de"),
    Language("sun_Latn", "Sundanese", "Austronesian", "Latn", "su"),
    Language("hin_Deva", "Hindi", "IE Indo-Aryan", "Deva", "hi"),
    Language("pol_Latn", "Polish", "IE Slavic", "Latn", "pl"),
    Language("slv_Latn", "Slovenian", "IE Slavic", "Latn", "sl"),
    Language("yue_Hant", "Cantonese", "Sino-Tibetan", "Hant", "yue_Hant"),
    Language("sin_Sinh", "Sinhala", "IE Indo-Aryan", "Sinh", "si"),
    Language("spa_Latn", "Spanish", "IE Romance", "Latn", "es"),
    Language("urd_Arab", "Urdu", "IE Indo-Aryan", "Arab", "ur"),
    Language("gle_Latn", "Irish", "IE Celtic", "Latn", "ga"),
    Language("swh_Latn", "Swahili", "Niger-Congo", "Latn", "sw"),
    Language("ben_Beng", "Bengali", "IE Indo-Aryan", "Beng", "bn"),
    Language("jpn_Jpan", "Japanese", "Japonic", "Jpan", "ja"),
    Language("min_Latn", "Minangkabau", "Austronesian", "Latn", None),
)

#: The 31 codes in the official order.
ILO_CODES: tuple[str, ...] = tuple(lang.code for lang in ILO_LANGUAGES)
_BY_CODE = {lang.code: lang for lang in ILO_LANGUAGES}


def language(code: str) -> Language:
    """Metadata of one ILO language; KeyError names the known codes."""
    try:
        return _BY_CODE[code]
    except KeyError:
        raise KeyError(f"{code!r} is not one of the 31 ILO languages: {', '.join(ILO_CODES)}") from None


def _sort_key(code: str) -> tuple:
    meta = _BY_CODE.get(code)
    if meta is None:  # not an ILO language: after all of them, by code
        return (1, OTHER_FAMILY, "", code)
    return (0, meta.family, meta.script, meta.name)


def by_family(codes) -> list[str]:
    """``codes`` ordered by family, then script, then name (codes of unknown languages last, by code).

    The one order of languages in every ILO figure: relatives sit together (swe/dan/nld,
    rus/ukr/srp), and within a family the scripts are grouped (Cyrillic vs Latin Slavic).
    """
    return sorted(dict.fromkeys(codes), key=_sort_key)


def family_groups(codes, min_size: int = 1) -> list[tuple[str, list[str]]]:
    """``[(family, codes)]`` in :func:`by_family` order; families with fewer than ``min_size``
    of ``codes`` are merged into one :data:`OTHER_FAMILY` group at the end (with unknown codes)."""
    groups: dict[str, list[str]] = {}
    for code in by_family(codes):
        meta = _BY_CODE.get(code)
        groups.setdefault(meta.family if meta else OTHER_FAMILY, []).append(code)
    kept = [(family, members) for family, members in groups.items()
            if family != OTHER_FAMILY and len(members) >= min_size]  # fmt: skip
    merged = [code for family, members in groups.items() if (family, members) not in kept for code in members]
    return kept + ([(OTHER_FAMILY, merged)] if merged else [])
