"""Math correctness reward: extract a completion's final answer, check it against the reference with math-verify.

Extraction is ours: an ordered list of strategies (``\\boxed{}``, ``<answer>`` tags, "the answer is X",
the last number, GSM8K's ``#### X``); the first that finds something wins. Equivalence is math-verify's
(sympy underneath): ``1/2 == 0.5 == \\frac{1}{2}``, ``\\$1,000 == 1000``, ``50\\% == 50``, ``x=3 == 3``,
``(x+1)^2 == x^2+2x+1``.

A hard deadline. Checking can run into one long C call that no signal interrupts: for
``\\boxed{9^{9^{9}}}`` sympy computes 9**387420489, minutes of one big-integer multiplication. So
every parse, check and canonical form runs in a killable worker process (:mod:`cohort.rewards.workers`),
under ``timeout_s`` each: past it the worker is killed and replaced, and the answer scores 0 while
the rest of the batch is scored by the other workers. math-verify's own timeouts (``signal.alarm``,
whole seconds, main thread only) are switched off. Extraction (regular expressions written to run
in linear time) stays in the calling process.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from cohort.rewards.workers import Outcome, shared_pool

logger = logging.getLogger(__name__)


class _DropDisabledTimeoutWarning(logging.Filter):
    """math-verify warns once that its timeout is off; ours is the worker's deadline, so drop it."""

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


# --- parsing, equivalence, canonical form -----------------------------------------------------------

_PARSE_TARGETS = (LatexExtractionConfig(), ExprExtractionConfig())
_PLAIN_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def parse_math(answer: str) -> list[Any]:
    """math-verify's parse of one bare answer (read as inline LaTeX, else as a plain expression).

    Returns a list holding the sympy value and the normalised string, or only the string when sympy
    could not read it, or ``[]``. A plain number (``-1,250.5``) skips the LaTeX grammar: math-verify's
    expression reader gives the same value about 10x faster. No time limit of its own: it runs in a
    worker (see the module docstring).
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
    with its whitespace collapsed. No time limit of its own: it runs in a worker.
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


# --- what the worker processes run (module-level, so that a task names them) --------------------------


@functools.lru_cache(maxsize=4096)
def _gold(reference: str) -> tuple[Any, ...] | None:
    """The parse of a reference, cached in each worker; None when it cannot be read as math."""
    parsed = parse_math(reference)
    return tuple(parsed) if _sympy_value(parsed) is not None else None


def reference_is_readable(reference: str) -> bool:
    """Whether ``reference`` reads as math (a worker task: parsing is unbounded in time)."""
    return _gold(reference) is not None


def answer_verdict(reference: str, answer: str, float_rounding: int) -> float | None:
    """1.0 if ``answer`` equals ``reference`` mathematically, else 0.0; None for an unreadable reference.
    A worker task: the check is unbounded in time."""
    gold = _gold(reference)
    if gold is None:
        return None
    parsed = parse_math(answer)
    return 1.0 if parsed and verify(list(gold), parsed, float_rounding=float_rounding, timeout_seconds=None) else 0.0


def _late(outcomes: dict[Any, Outcome]) -> list[Any]:
    return [key for key, outcome in outcomes.items() if outcome.timed_out]


class MathAnswerReward:
    """1.0 when a completion's final answer equals the reference mathematically (math-verify), else 0.0.

    ``None`` when the reference itself cannot be read as math, or reading it runs past ``timeout_s``
    ("could not score"). A completion with no extractable answer scores 0.0, and so does one whose
    check runs past ``timeout_s``: a hard deadline, each parse and check running in one of
    ``workers`` killable worker processes (module docstring). Equal (reference, answer) pairs of a
    batch are checked once. Example: reference ``"0.5"``, completion ``"... so \\boxed{\\frac{1}{2}}"`` -> 1.0.
    """

    is_correctness = True

    def __init__(
        self,
        answer_column: str = "answer",
        extract: Sequence[str] | str = DEFAULT_EXTRACT,
        float_rounding: int = 6,
        timeout_s: float = 2.0,
        workers: int = 2,
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
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"math: workers must be an int >= 1, got {workers!r}")
        self.answer_column = answer_column
        self.extract = strategies
        self.float_rounding = float_rounding
        self.timeout_s = float(timeout_s)
        self.workers = workers
        self._voting_fallbacks = 0
        self.__name__ = "math"

    def _run(self, function: Callable[..., Any], calls: Sequence[tuple]) -> list[Outcome]:
        return shared_pool("math", self.workers, preload=(__name__,)).run(function, calls, self.timeout_s)

    def extract_text(self, completion: str) -> str | None:
        """The completion's final answer as cleaned text (first successful strategy), or None."""
        return extract_final_answer(completion, self.extract)

    def extract_answer(self, completion: str) -> str | None:
        """The final answer in canonical form (see :func:`canonical_form`), for majority voting.

        Falls back to the cleaned text when canonicalising fails or runs past ``timeout_s``.
        """
        text = self.extract_text(completion)
        if text is None:
            return None
        (outcome,) = self._run(canonical_form, [(text, self.float_rounding)])
        if outcome.value is not None:
            return outcome.value
        self._voting_fallbacks += 1
        if self._voting_fallbacks == 1:  # once per reward, not once per completion
            logger.warning("math: the canonical form of %.80r %s; voting on its text (further cases are not logged)",
                           text, f"ran past {self.timeout_s:g} s" if outcome.timed_out else f"failed ({outcome.error})")
        return text

    def _readable(self, references: list[str]) -> dict[str, bool]:
        """Which references read as math; one that cannot, or takes past the limit, scores None."""
        outcomes = dict(zip(references, self._run(reference_is_readable, [(r,) for r in references])))
        unreadable = [r for r, outcome in outcomes.items() if outcome.value is not True]
        if unreadable:
            late = _late(outcomes)
            logger.warning("math: %d reference(s) cannot be read as math%s, e.g. %.80r; their samples score None",
                           len(unreadable), f" ({len(late)} ran past {self.timeout_s:g} s)" if late else "", unreadable[0])
        return {r: outcome.value is True for r, outcome in outcomes.items()}

    def _verdicts(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], float | None]:
        """Each (reference, answer) pair's verdict: a check past the limit scores 0, a worker that
        fails otherwise (it died, say) None."""
        outcomes = dict(zip(pairs, self._run(answer_verdict, [(r, a, self.float_rounding) for r, a in pairs])))
        late = _late(outcomes)
        failed = [pair for pair, outcome in outcomes.items() if outcome.error is not None]
        if late:
            logger.warning("math: %d of %d answers ran past %g s and score 0, e.g. %.80r",
                           len(late), len(pairs), self.timeout_s, late[0][1])
        if failed:
            logger.warning("math: checking %d of %d answers failed (%s) and they score None, e.g. %.80r",
                           len(failed), len(pairs), outcomes[failed[0]].error, failed[0][1])
        return {pair: 0.0 if outcome.timed_out else outcome.value for pair, outcome in outcomes.items()}

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        """Score each completion against its row's reference: the references are read first, then
        every distinct (reference, answer) pair is checked, spread over the workers."""
        if self.answer_column not in columns:
            raise KeyError(f"math needs the dataset column {self.answer_column!r}; got {sorted(columns)}")
        references = [reference_answer_text(r) for r in columns[self.answer_column]]
        if len(references) != len(completions):
            raise ValueError(f"column {self.answer_column!r} has {len(references)} rows for {len(completions)} completions")
        answers = [self.extract_text(completion) for completion in completions]
        readable = self._readable(sorted({r for r in references if r is not None}))
        pairs = sorted({(r, a) for r, a in zip(references, answers) if r is not None and readable[r] and a is not None})
        verdicts = self._verdicts(pairs) if pairs else {}
        return [
            None if r is None or not readable[r] else 0.0 if a is None else verdicts[(r, a)]
            for r, a in zip(references, answers)
        ]
