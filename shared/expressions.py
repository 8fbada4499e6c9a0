"""DHIS2 validation-rule expressions by code, parsed once, never ``eval``-ed.

Grammar (what the contract allows)::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := '-' unary | '+' unary | atom
    atom   := NUMBER | '#{' CODE ('.' CODE)? '}' | '(' expr ')'

``#{DE.COC}`` is one value; ``#{DE}`` is the sum over the combos of DE that
have a value (read from ``values[(DE, None)]`` when the caller has summed it
once for many rules, as validation does). Arithmetic is exact: rational numbers
(``Fraction``), so ``#{A} / 3 * 3`` is ``#{A}`` (in ``Decimal``'s 28 digits it was
0.999...9 for 1, and a HIGH rule ``equal_to`` rejected the return, showing "1 = 1" as its
violation; DHIS2's doubles happen to round it back). The registry parses every
rule when metadata arrives, so a bad expression is refused at import;
validation evaluates the parsed tree.

Defined behaviours instead of crashes:

* a reference with no value is *missing*; what that means is the rule's
  missing-value strategy (``evaluate`` reports how many references were
  missing; with ``NEVER_SKIP`` a missing value counts as 0);
* division by zero makes that side *undefined* (``None``): the rule cannot be
  judged and is skipped, exactly like a rule whose values are missing; so does a
  side whose value is beyond what a double holds (DHIS2's infinity), which no
  violation could report as a number;
* a number written beyond 1e300 (or a non-zero one below 1e-300) is refused at
  import: ``1e400`` is infinity in DHIS2's doubles, and ``1e999999999`` as an exact
  number would be a billion digits.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Mapping, Union

from shared.schemas.common import CODE_PATTERN

_CODE = CODE_PATTERN.removeprefix("^").removesuffix(r"\Z")
_TOKEN = re.compile(
    rf"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<ref>#\{{(?P<de>{_CODE})(?:\.(?P<coc>{_CODE}))?\}})"
    r"|(?P<op>[-+*/()]))", re.ASCII)  # numbers in ASCII digits, as DHIS2 writes them

MAX_LENGTH = 2000
MAX_DEPTH = 50
LARGEST = Decimal("1e300")       # a number written in an expression, at most
SMALLEST = Decimal("1e-300")     # and, if not zero, at least
_DOUBLE_MAX = Fraction(sys.float_info.max)


class ExpressionError(ValueError):
    pass


@dataclass(frozen=True)
class Num:
    value: Fraction


@dataclass(frozen=True)
class Ref:
    data_element: str
    combo: str | None  # None: total over the element's combos


@dataclass(frozen=True)
class Neg:
    operand: "Node"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: "Node"
    right: "Node"


Node = Union[Num, Ref, Neg, BinOp]


def _tokens(text: str) -> list[tuple[str, str, re.Match]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            rest = text[pos:].lstrip()
            at = len(text) - len(rest) + 1
            if rest.startswith("#{"):
                ref = rest[:rest.find("}") + 1] if "}" in rest else rest[:30]
                raise ExpressionError(f"{ref!r} at position {at} is not a reference #{{CODE}} or #{{CODE.COMBO}}: "
                                      "codes are 1-50 Latin letters, digits 0-9, '_' or '-'")
            if rest[:1].isdigit() or rest[:1] in ".,":  # a digit of another script (Lao ໕), a decimal comma
                raise ExpressionError(f"{rest[:15]!r} at position {at} is not a number: numbers are written "
                                      "in digits 0-9 with a decimal point")
            raise ExpressionError(f"unexpected {rest[:15]!r} at position {at}")
        kind = m.lastgroup if m.lastgroup in ("number", "op") else "ref"
        out.append((kind, m.group(kind if kind != "ref" else "ref"), m))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i][:2] if self.i < len(self.tokens) else None

    def take(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.tokens:
            raise ExpressionError("expression is empty")
        node = self.expr()
        if self.i != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.i][1]!r} after a complete expression")
        return node

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            node = BinOp(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            node = BinOp(op, node, self.unary())
        return node

    def unary(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"expression nests deeper than {MAX_DEPTH}")
        try:
            if self.peek() == ("op", "-"):
                self.take()
                return Neg(self.unary())
            if self.peek() == ("op", "+"):
                self.take()
                return self.unary()
            return self.atom()
        finally:
            self.depth -= 1

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise ExpressionError("expression ends where a value was expected")
        kind, text = tok
        if kind == "number":
            self.take()
            number = Decimal(text)
            if number and not SMALLEST <= number <= LARGEST:
                raise ExpressionError(f"number {text} is out of range (0, or 1e-300 to 1e300)")
            return Num(Fraction(number))
        if kind == "ref":
            m = self.take()[2]
            return Ref(m.group("de"), m.group("coc"))
        if tok == ("op", "("):
            self.take()
            node = self.expr()
            if self.peek() != ("op", ")"):
                raise ExpressionError("missing closing parenthesis")
            self.take()
            return node
        raise ExpressionError(f"unexpected {text!r} where a value was expected")


def parse(text: str) -> Node:
    if not isinstance(text, str):
        raise ExpressionError("expression must be text")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters")
    return _Parser(text).parse()


def references(node: Node) -> list[Ref]:
    if isinstance(node, Ref):
        return [node]
    if isinstance(node, Neg):
        return references(node.operand)
    if isinstance(node, BinOp):
        return references(node.left) + references(node.right)
    return []


@dataclass(frozen=True)
class Evaluation:
    value: Fraction | None  # None: undefined (division by zero, beyond a double) or every reference missing
    refs: int               # references in the expression
    missing: int            # references that had no value


def evaluate(node: Node, values: Mapping[tuple[str, str], Decimal],
             missing_as_zero: bool = False) -> Evaluation:
    """Evaluate with ``values[(data_element, combo)]``; see the module docstring."""
    counts = [0, 0]  # refs, missing
    value = _ev(node, values, missing_as_zero, counts)
    if value is not None and abs(value) > _DOUBLE_MAX:
        value = None
    return Evaluation(value, counts[0], counts[1])


# A module function, not a closure that calls itself: such a closure is a reference cycle
# (function -> cell -> function) that only the cyclic collector frees, one per evaluation:
# most of the validation process's cyclic garbage under load (gc.DEBUG_SAVEALL).
def _ev(n: Node, values: Mapping[tuple[str, str], Decimal], missing_as_zero: bool,
        counts: list[int]) -> Fraction | None:
    if isinstance(n, Num):
        return n.value
    if isinstance(n, Ref):
        counts[0] += 1
        if n.combo is not None:
            v = values.get((n.data_element, n.combo))
        elif (n.data_element, None) in values:  # the total, precomputed by the caller
            v = values[(n.data_element, None)]
        else:
            found = [v for (de, _), v in values.items() if de == n.data_element]
            v = sum(map(Fraction, found)) if found else None
        if v is None:
            counts[1] += 1
            return Fraction(0) if missing_as_zero else None
        return Fraction(v)
    if isinstance(n, Neg):
        v = _ev(n.operand, values, missing_as_zero, counts)
        return None if v is None else -v
    left = _ev(n.left, values, missing_as_zero, counts)
    right = _ev(n.right, values, missing_as_zero, counts)
    if left is None or right is None:
        return None
    if n.op == "+":
        return left + right
    if n.op == "-":
        return left - right
    if n.op == "*":
        return left * right
    if right == 0:
        return None
    return left / right


def plain(x: Fraction | Decimal) -> str:
    """A number as a message shows it: exactly when it has a finite decimal form (12, 0.25),
    else to 15 significant digits (1/3: 0.333333333333333)."""
    if isinstance(x, Fraction):
        twos, fives, rest = 0, 0, x.denominator
        while rest % 2 == 0:
            rest, twos = rest // 2, twos + 1
        while rest % 5 == 0:
            rest, fives = rest // 5, fives + 1
        if rest != 1:
            return format(float(x), ".15g")
        places = max(twos, fives)  # x * 10**places is a whole number
        x = Decimal(x.numerator * 10 ** places // x.denominator).scaleb(-places)
    return format(x.normalize(), "f") if x == x.to_integral_value() else format(x, "f")


OPERATORS = {
    "equal_to": lambda a, b: a == b,
    "not_equal_to": lambda a, b: a != b,
    "greater_than": lambda a, b: a > b,
    "greater_than_or_equal_to": lambda a, b: a >= b,
    "less_than": lambda a, b: a < b,
    "less_than_or_equal_to": lambda a, b: a <= b,
}

# how the operators read in messages and e-mails
SYMBOLS = {"equal_to": "=", "not_equal_to": "≠", "greater_than": ">", "greater_than_or_equal_to": "≥",
           "less_than": "<", "less_than_or_equal_to": "≤"}
