"""Shared validators: the one statement of what a setting may hold (`Rule`), and the predicates every module uses
to tell a real number or a whole number from a bool or a string (Python's bool is an int: True must not pass
for 1). Error messages name the argument, what was expected and the value given (`show`)."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

MAX_STR = 4096  # characters of a string setting (PATH_MAX)


def is_int(value: object) -> bool:
    """A whole number that is not a bool (True is an int in Python; 5.0 is not an int here)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value: object, *, finite: bool = True) -> bool:
    """An int or a float that is not a bool (nor a string), finite unless finite=False."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return not finite or isinstance(value, Integral) or math.isfinite(value)


@dataclass(frozen=True)
class Rule:
    """What one setting may hold: the single statement of its type and range, from which its check, its error
    message and its help text all come (TrainConfig's FIELD_RULES, the grid spec's tables).

    kind: bool (True / False only: not "false", "no", 0 or 1), int (a whole number: not a bool, not 1e3 or 5.0),
    float (an int or a float, finite: never a bool or a string) or str (non-empty). low / high bound a number,
    the bound itself excluded when open_low / open_high. choices: the strings allowed (a tuple, or a LiveChoices
    that re-reads a registry at each check, so that an entry registered at run time is accepted); pattern: a regex the whole
    string must match, pattern_text says it in words; a string is at most MAX_STR characters (a path's limit).
    optional: None (YAML null) is allowed too.
    """

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: Sequence[str] = ()
    pattern: str | None = None
    pattern_text: str = ""
    optional: bool = False

    def expected(self, *, null: bool = True) -> str:
        """What the value must be, in words: "an int >= 1 and <= 1024", "a number in (0, 10]", "one of [...]"
        (and "or null" when optional, unless null=False)."""
        if self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = f"one of {list(self.choices)}" if self.choices else self.pattern_text or "a non-empty string"
        elif self.kind is int:
            bounds = [
                f"{op} {_number_text(b)}"
                for op, b in ((">" if self.open_low else ">=", self.low), ("<" if self.open_high else "<=", self.high))
                if b is not None
            ]
            text = " ".join(["an int", " and ".join(bounds)]) if bounds else "an int"
        elif self.low is not None and self.high is not None:
            text = (
                f"a number in {'(' if self.open_low else '['}{_number_text(self.low)}, "
                f"{_number_text(self.high)}{')' if self.open_high else ']'}"
            )
        elif self.low is not None:
            text = f"a number {'>' if self.open_low else '>='} {_number_text(self.low)}"
        elif self.high is not None:
            text = f"a number {'<' if self.open_high else '<='} {_number_text(self.high)}"
        else:
            text = "a finite number"
        return text + (" or null" if self.optional and null else "")

    def problem(self, key: str, value: object) -> str | None:
        """None when `value` obeys the rule, else the message: the key, what was expected, the value given."""
        if value is None and self.optional:
            return None
        if not self._type_ok(value):
            hint = ""
            if (
                self.kind is int
                and isinstance(value, float)
                and math.isfinite(value)
                and value.is_integer()
                and self._value_ok(int(value))
            ):
                hint = f"; write {int(value)}, without a decimal point or exponent"
            elif self.kind is bool and isinstance(value, str):
                hint = "; a boolean is true or false (unquoted in YAML)"
            return f"{key} must be {self.expected()}, got {show(value)} ({type(value).__name__}){hint}"
        if self.kind is str and len(value) > MAX_STR:
            return f"{key} must be at most {MAX_STR} characters, got {len(value):,}: {show(value)}"
        if not self._value_ok(value):
            hint = suggest(value, self.choices) if self.choices else ""
            return f"{key} must be {self.expected()}, got {show(value)}{hint}"
        return None

    def check(self, key: str, value: object) -> None:
        """Raises ValueError with `problem`'s message when `value` breaks the rule."""
        message = self.problem(key, value)
        if message is not None:
            raise ValueError(message)

    def help(self, text: str) -> str:
        """`text` with the range of a number appended (choices and booleans say theirs in the text)."""
        return f"{text}; {self.expected(null=False)}" if self.kind in (int, float) else text

    def _type_ok(self, value: object) -> bool:
        if self.kind is bool or isinstance(value, bool):
            return self.kind is bool and isinstance(value, bool)
        if self.kind is float:
            return isinstance(value, (int, float))
        return isinstance(value, self.kind)

    def _value_ok(self, value: Any) -> bool:
        if self.kind is str:
            return (
                bool(value)
                and (not self.choices or value in self.choices)
                and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)
            )
        if self.kind is bool:
            return True
        if isinstance(value, float) and not math.isfinite(value):
            return False  # (an int is finite; math.isfinite would overflow on a 400-digit one)
        low_ok = self.low is None or (value > self.low if self.open_low else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return low_ok and high_ok


class LiveChoices(Sequence[str]):
    """The names `source()` returns now, as a read-only sequence re-read at every use: a Rule's choices that follow a
    registry (`LiveChoices(LOSS_REGISTRY.names)`). Membership is exact (case-sensitive), as a tuple's is."""

    def __init__(self, source: Callable[[], Iterable[str]]) -> None:
        self._source = source

    def _names(self) -> tuple[str, ...]:
        return tuple(self._source())

    def __getitem__(self, index):  # type: ignore[override]
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __repr__(self) -> str:
        return repr(self._names())


def check_fields(values: object, rules: Mapping[str, Rule], prefix: str = "") -> None:
    """Checks each rule's value (an attribute of `values`, or its item when `values` is a mapping); raises the
    first problem, its key written prefix + name (e.g. "asha.grace_period")."""
    for name, rule in rules.items():
        rule.check(prefix + name, values[name] if isinstance(values, Mapping) else getattr(values, name))


def suggest(name: object, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" naming the known name nearest to `name` (difflib), or "" when none is close."""
    if not isinstance(name, str):
        return ""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    close = close or [k for k in known if len(name) >= 3 and k.startswith(name)][:1]  # "grace" -> "grace_period"
    return f"; did you mean {close[0]!r}?" if close else ""


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 60, 60, 40, 2, 5, 4


def show(value: object) -> str:
    """repr(value) cut short (a long string, a huge int, a deep or aliased YAML structure stays one short line)."""
    text = _REPR.repr(value)
    return text if len(text) <= 100 else text[:96] + " ..."


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"
