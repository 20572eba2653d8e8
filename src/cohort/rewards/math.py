"""Math correctness reward: extract a completion's final answer, check it against the reference with math-verify.

Extraction is ours: an ordered list of strategies (``\\boxed{}``, ``<answer>`` tags, "the answer is X",
the last number, GSM8K's ``#### X``); the first that finds something wins. Equivalence is math-verify's
(sympy underneath): ``1/2 == 0.5 == \\frac{1}{2}``, ``\\$1,000 == 1000``, ``50\\% == 50``, ``x=3 == 3``,
``(x+1)^2 == x^2+2x+1``.

Time limits. math-verify 0.9 bounds its own work with ``signal.alarm`` (whole seconds): it installs a
SIGALRM handler, and on the way out calls ``alarm(0)`` — which also cancels the scorer's
``setitimer`` deadline (both drive the one ITIMER_REAL timer) — and it catches every ``Exception``
raised inside it, the scorer's :class:`~cohort.rewards.base.RewardTimeout` included. So we switch
math-verify's timeouts off and bound each parse/verify ourselves with :func:`answer_time_limit`,
which raises a ``BaseException`` (nothing in math-verify or sympy swallows it), never outlives the
scorer's deadline, and hands the scorer's timer back armed with the time it had left.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

logger = logging.getLogger(__name__)


class _DropDisabledTimeoutWarning(logging.Filter):
    """math-verify warns once that its timeout is off; we run our own (answer_time_limit), so drop it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropDisabledTimeoutWarning())


# --- extraction strategies: completion text -> answer text (or None) --------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THE_ANSWER_IS = re.compile(r"answer\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
_GSM8K_MARKER = re.compile(r"####\s*([^\n]+)")
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_LAST_NUMBER = re.compile(rf"(?<![\w.])-?(?:{_NUMBER})(?:\s*/\s*(?:{_NUMBER}))?(?:\s*\\?%)?")


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces matched; None if absent or unclosed.

    ``\\boxed 5`` (no braces) gives ``5``. Example: ``"so \\boxed{\\frac{1}{2}}."`` -> ``"\\frac{1}{2}"``.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    if start >= len(text):
        return None
    if text[start] != "{":
        bare = re.match(r"[^\s$]+", text[start:])
        return bare.group(0) if bare else None
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index].strip()
    return None


def _cut_sentence(text: str) -> str:
    """Text up to the end of its first sentence: ``"42. Done."`` -> ``"42"``, ``"3.5."`` -> ``"3.5"``."""
    text = re.split(r"\.\s", text, maxsplit=1)[0].strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def answer_after_phrase(text: str) -> str | None:
    """What follows the last "the answer is" / "final answer:" / "answer =", to the end of its sentence."""
    matches = list(_THE_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0]
    return _cut_sentence(rest) or None


def answer_tag_content(text: str) -> str | None:
    """The last ``<answer>...</answer>`` block: its ``\\boxed{}`` or "the answer is" part if it has one, else all of it."""
    matches = list(_ANSWER_TAG.finditer(text))
    if not matches:
        return None
    inner = matches[-1].group(1).strip()
    return last_boxed_content(inner) or answer_after_phrase(inner) or inner


def last_number(text: str) -> str | None:
    """The last number in the text: integers, decimals, thousands commas, ``a/b``, a trailing ``%``."""
    matches = _LAST_NUMBER.findall(text)
    return matches[-1] if matches else None


def gsm8k_marker_answer(text: str) -> str | None:
    """What follows the last GSM8K ``####`` marker, commas kept (math-verify reads ``1,000`` as 1000)."""
    matches = _GSM8K_MARKER.findall(text)
    return matches[-1].strip() if matches else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed_content,
    "answer_tag": answer_tag_content,
    "the_answer_is": answer_after_phrase,
    "last_number": last_number,
    "gsm8k_marker": gsm8k_marker_answer,
}
"""Extraction strategies by name, for ``MathAnswerReward(extract=...)``."""

DEFAULT_EXTRACT = ("boxed", "answer_tag", "the_answer_is", "last_number")


_UNIT_WORDS = re.compile(rf"^(-?(?:{_NUMBER}))\s*(\\?%)?\s+([A-Za-z]+)(?:[\s-]+[A-Za-z]+)*$")
_NOT_UNITS = {"pi"}  # "2 pi" is a value, not 2 with a unit


def clean_answer(text: str) -> str:
    """An extracted answer made ready for math-verify: math delimiters, markdown bold, a trailing period
    and trailing unit words after a number are removed (``"**$18 dollars.**"`` -> ``"18"``).

    A nested ``\\boxed{}`` is unwrapped. Words are dropped only after a plain number, and not when the
    first is a single letter or ``pi`` (``"2 x"``, ``"2 pi"`` stay); LaTeX units (``10\\text{ cm}``) are
    left to math-verify.
    """
    text = text.strip()
    boxed = last_boxed_content(text)
    if boxed is not None:
        text = boxed
    text = re.sub(r"(?<!\\)\$|\\\(|\\\)|\\\[|\\\]|\*\*", "", text).strip()
    text = text.removeprefix("\\$").strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    unit = _UNIT_WORDS.match(text)
    if unit and len(unit.group(3)) > 1 and unit.group(3).lower() not in _NOT_UNITS:
        text = unit.group(1) + (unit.group(2) or "")
    return text


def extract_final_answer(completion: str, strategies: Sequence[str] = DEFAULT_EXTRACT) -> str | None:
    """The cleaned answer from the first strategy (in order) that finds one; None if none does."""
    for name in strategies:
        found = EXTRACTORS[name](completion)
        if found is not None:
            cleaned = clean_answer(found)
            if cleaned:
                return cleaned
    return None


def reference_answer_text(reference: Any) -> str | None:
    """A dataset's reference answer as text: numbers as written, a worked solution reduced to its last
    ``\\boxed{}`` or ``####`` answer; None when there is no reference."""
    if reference is None or isinstance(reference, bool):
        return None
    if isinstance(reference, (int, float)):
        return repr(reference) if isinstance(reference, float) else str(reference)
    if not isinstance(reference, str):
        return None
    text = reference
    if "\\boxed" in text or "\\fbox" in text:
        text = last_boxed_content(text) or ""
    elif "####" in text:
        text = gsm8k_marker_answer(text) or ""
    cleaned = clean_answer(text)
    return cleaned or None


# --- time limits that coexist with the scorer's SIGALRM deadline ------------------------------------


class AnswerTimeout(BaseException):
    """Parsing or verifying one answer ran past its limit.

    A BaseException on purpose: math-verify and sympy catch ``Exception`` internally and would
    swallow an ordinary one, letting the hung computation carry on.
    """


_MIN_TIMER_S = 1e-6  # setitimer(0) disarms; a deadline closer than this counts as passed


@contextmanager
def answer_time_limit(seconds: float):
    """Raise AnswerTimeout if the enclosed code runs past ``seconds`` (main thread, Unix; elsewhere no limit).

    Nests inside another SIGALRM deadline (the scorer's): the limit never outlives it, and on exit
    the outer handler and timer are restored with the time they had left — if that time ran out
    meanwhile, the outer handler fires at once (the scorer's RewardTimeout propagates, as it should).
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise AnswerTimeout(f"exceeded {seconds:g} s")

    outer_handler = signal.getsignal(signal.SIGALRM)
    if outer_handler is None:  # installed outside Python; the closest we can restore is the default
        outer_handler = signal.SIG_DFL
    started = time.monotonic()  # read before the timer, so the outer time left is never overestimated
    outer_remaining, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    try:  # an outer alarm landing between these two lines still reaches the outer handler via `finally`
        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, min(seconds, outer_remaining) if outer_remaining > 0 else seconds)
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_remaining > 0:
            left = outer_remaining - (time.monotonic() - started)
            if left >= _MIN_TIMER_S:
                signal.setitimer(signal.ITIMER_REAL, left, outer_interval)
            else:
                signal.raise_signal(signal.SIGALRM)  # the outer deadline passed while we held the timer


# --- parsing, equivalence, canonical form -----------------------------------------------------------

_PARSE_TARGETS = (LatexExtractionConfig(), ExprExtractionConfig())
_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def parse_math(answer: str) -> list[Any]:
    """math-verify's parse of one bare answer (read as inline LaTeX, else as a plain expression).

    Returns a list holding the sympy value and the normalised string, or only the string when sympy
    could not read it, or ``[]``. A plain number (``-1,250.5``) skips the LaTeX grammar: math-verify's
    expression reader gives the same value about 10x faster. No internal timeout: wrap it in
    :func:`answer_time_limit`.
    """
    if _PLAIN_NUMBER.fullmatch(answer):
        return parse(answer, extraction_config=_PARSE_TARGETS[1:], parsing_timeout=None)
    return parse(f"${answer}$", extraction_config=_PARSE_TARGETS, parsing_timeout=None)


def _sympy_value(parsed: Sequence[Any]) -> sympy.Basic | sympy.MatrixBase | None:
    return next((item for item in parsed if isinstance(item, (sympy.Basic, sympy.MatrixBase))), None)


def canonical_form(answer: str, float_rounding: int = 6) -> str:
    """One string per value, for majority voting: sympy's printing of the simplified value of ``answer``.

    Percent signs are dropped (``50%`` -> ``50``); floats become exact decimals rounded to
    ``float_rounding`` places (``0.5`` -> ``1/2``); ``x = 3`` becomes ``3``; symbolic results are
    simplified then expanded (``(x+1)^2`` -> ``x**2 + 2*x + 1``). Text sympy cannot read comes back
    with its whitespace collapsed. Unbounded in time: wrap it in :func:`answer_time_limit`.
    """
    text = re.sub(r"\\?%\s*$", "", answer).strip()
    value = _sympy_value(parse_math(text))
    if value is None:
        return " ".join(text.split())
    try:
        if isinstance(value, sympy.Eq) and isinstance(value.lhs, sympy.Symbol):
            value = value.rhs
        if isinstance(value, sympy.Basic):
            floats = value.atoms(sympy.Float)
            if floats:
                value = value.xreplace({f: sympy.Rational(str(round(float(f), float_rounding))) for f in floats})
            if isinstance(value, sympy.Expr):
                value = sympy.expand(sympy.simplify(value))
        return str(value)
    except Exception:  # sympy cannot simplify every object it can build (sets, intervals, ...)
        return str(value)


class MathAnswerReward:
    """1.0 when a completion's final answer equals the reference mathematically (math-verify), else 0.0.

    ``None`` when the reference itself cannot be read as math ("could not score"). A completion with
    no extractable answer scores 0.0, and so does one whose parse/verify runs past ``timeout_s``.
    Example: reference ``"0.5"``, completion ``"... so \\boxed{\\frac{1}{2}}"`` -> 1.0.
    """

    is_correctness = True

    def __init__(
        self,
        answer_column: str = "answer",
        extract: Sequence[str] | str = DEFAULT_EXTRACT,
        float_rounding: int = 6,
        timeout_s: float = 2.0,
    ) -> None:
        if not isinstance(answer_column, str) or not answer_column:
            raise ValueError(f"math: answer_column must be a non-empty string, got {answer_column!r}")
        strategies = (extract,) if isinstance(extract, str) else tuple(extract)
        unknown = [name for name in strategies if name not in EXTRACTORS]
        if not strategies or unknown or len(set(strategies)) != len(strategies):
            raise ValueError(
                f"math: extract must be a non-empty list of distinct strategies from {', '.join(EXTRACTORS)}; "
                f"got {list(strategies)}"
            )
        if isinstance(float_rounding, bool) or not isinstance(float_rounding, int) or float_rounding < 0:
            raise ValueError(f"math: float_rounding must be an int >= 0, got {float_rounding!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
            raise ValueError(f"math: timeout_s must be a finite number of seconds > 0, got {timeout_s!r}")
        self.answer_column = answer_column
        self.extract = strategies
        self.float_rounding = float_rounding
        self.timeout_s = float(timeout_s)
        self.__name__ = "math"

    def extract_text(self, completion: str) -> str | None:
        """The completion's final answer as cleaned text (first successful strategy), or None."""
        return extract_final_answer(completion, self.extract)

    def extract_answer(self, completion: str) -> str | None:
        """The final answer in canonical form (see :func:`canonical_form`), for majority voting.

        Falls back to the cleaned text when canonicalising runs past ``timeout_s``.
        """
        text = self.extract_text(completion)
        if text is None:
            return None
        try:
            with answer_time_limit(self.timeout_s):
                return canonical_form(text, self.float_rounding)
        except AnswerTimeout:
            logger.warning("math: canonical form of %.80r ran past %g s; voting on its text", text, self.timeout_s)
            return text

    def _parse_reference(self, reference: str) -> list[Any] | None:
        try:
            with answer_time_limit(self.timeout_s):
                parsed = parse_math(reference)
        except AnswerTimeout:
            logger.warning("math: parsing the reference %.80r ran past %g s; not scoring it", reference, self.timeout_s)
            return None
        if _sympy_value(parsed) is None:
            logger.warning("math: the reference %.80r cannot be read as math; not scoring it", reference)
            return None
        return parsed

    def _verdict(self, gold: list[Any], answer: str) -> float:
        try:
            with answer_time_limit(self.timeout_s):
                parsed = parse_math(answer)
                same = bool(parsed) and verify(gold, parsed, float_rounding=self.float_rounding, timeout_seconds=None)
        except AnswerTimeout:
            logger.warning("math: checking the answer %.80r ran past %g s; scoring it 0", answer, self.timeout_s)
            return 0.0
        return 1.0 if same else 0.0

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        """Score each completion against its row's reference; equal (reference, answer) pairs are checked once."""
        if self.answer_column not in columns:
            raise KeyError(f"math needs the dataset column {self.answer_column!r}; got {sorted(columns)}")
        references = columns[self.answer_column]
        if len(references) != len(completions):
            raise ValueError(f"column {self.answer_column!r} has {len(references)} rows for {len(completions)} completions")
        golds: dict[str, list[Any] | None] = {}
        verdicts: dict[tuple[str, str], float] = {}
        scores: list[float | None] = []
        for completion, reference in zip(completions, references):
            reference_text = reference_answer_text(reference)
            if reference_text is None:
                scores.append(None)
                continue
            if reference_text not in golds:
                golds[reference_text] = self._parse_reference(reference_text)
            gold = golds[reference_text]
            if gold is None:
                scores.append(None)
                continue
            answer = self.extract_text(completion)
            if answer is None:
                scores.append(0.0)
                continue
            key = (reference_text, answer)
            if key not in verdicts:
                verdicts[key] = self._verdict(gold, answer)
            scores.append(verdicts[key])
        return scores
