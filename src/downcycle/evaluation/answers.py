"""Scoring generated answers as lm-evaluation-harness scores them: regex answer extraction
(its ``regex`` filter followed by ``take_first``) and ``exact_match`` with its normalisation options.

Definitions (lm-eval 0.4.x, ``filters/extraction.py::RegexFilter`` and
``api/metrics.py::exact_match_hf_evaluate``, itself Hugging Face ``evaluate``'s exact_match):

* extraction: all non-overlapping matches of the pattern (``re.findall``); the match at index
  ``group_select`` (0 the first, -1 the last); when the pattern has several groups, the first
  non-empty group of that match; surrounding whitespace stripped; no match gives the fallback
  ``"[invalid]"``.
* exact match: both prediction and reference have every ``regexes_to_ignore`` pattern removed, in
  order (``re.sub``), then optionally lower-cased, stripped of ASCII punctuation and of digits, and
  are compared as whole strings (1.0 or 0.0).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

__all__ = ["ExactMatch", "RegexExtract"]

INVALID = "[invalid]"  # the harness's fallback when a pattern does not match


@dataclass(frozen=True)
class RegexExtract:
    """Pull the answer out of a generation with a regular expression.

    Attributes:
        pattern: the regular expression.
        group_select: which match to keep when there are several (0 the first, -1 the last).
        fallback: returned when nothing matches.
    """

    pattern: str
    group_select: int = 0
    fallback: str = INVALID

    def __call__(self, text: str) -> str:
        matches = re.findall(self.pattern, text if isinstance(text, str) else "")
        if not matches:
            return self.fallback
        found = matches[self.group_select]
        if isinstance(found, tuple):  # several groups: the first that matched something
            found = next((g for g in found if g), self.fallback)
        return found.strip()


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NO_DIGITS = str.maketrans("", "", string.digits)


@dataclass(frozen=True)
class ExactMatch:
    """Whole-string equality after the harness's normalisation.

    Attributes:
        regexes_to_ignore: patterns removed (in order) from both strings first.
        ignore_case: compare lower-cased.
        ignore_punctuation: drop ``string.punctuation`` characters.
        ignore_numbers: drop ``string.digits``.
    """

    regexes_to_ignore: tuple[str, ...] = field(default_factory=tuple)
    ignore_case: bool = False
    ignore_punctuation: bool = False
    ignore_numbers: bool = False

    def normalize(self, text: str) -> str:
        for pattern in self.regexes_to_ignore:
            text = re.sub(pattern, "", text)
        if self.ignore_case:
            text = text.lower()
        if self.ignore_punctuation:
            text = text.translate(_NO_PUNCTUATION)
        if self.ignore_numbers:
            text = text.translate(_NO_DIGITS)
        return text

    def __call__(self, prediction: str, reference: str) -> float:
        return float(self.normalize(prediction) == self.normalize(reference))
