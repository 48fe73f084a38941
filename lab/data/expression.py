"""Formulas in x, such as `x**2 + 2*cos(x) + 2*exp(-x)`, read from the command line safely.

The text is parsed with Python's `ast` and every node is checked against a small
whitelist: numbers, the variable `x`, the constants `pi` and `e`, `+ - * / **`, unary
minus/plus, and calls by name to the elementary functions in FUNCTIONS. The checked
tree is turned into torch operations; the text is never passed to eval/exec, so
`__import__('os').system(...)`, attribute access, lambdas, comprehensions, strings
and everything else are refused with a one-line ConfigError naming the offending part.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable

import torch

from lab.errors import ConfigError

VARIABLE = "x"
CONSTANTS = {"pi": math.pi, "e": math.e}
# name -> (number of arguments, torch function)
FUNCTIONS: dict[str, tuple[int, Callable[..., torch.Tensor]]] = {
    "sin": (1, torch.sin), "cos": (1, torch.cos), "tan": (1, torch.tan),
    "arcsin": (1, torch.asin), "arccos": (1, torch.acos), "arctan": (1, torch.atan),
    "asin": (1, torch.asin), "acos": (1, torch.acos), "atan": (1, torch.atan),
    "sinh": (1, torch.sinh), "cosh": (1, torch.cosh), "tanh": (1, torch.tanh),
    "exp": (1, torch.exp), "log": (1, torch.log), "log2": (1, torch.log2), "log10": (1, torch.log10),
    "sqrt": (1, torch.sqrt), "abs": (1, torch.abs), "sign": (1, torch.sign),
    "floor": (1, torch.floor), "ceil": (1, torch.ceil),
    "min": (2, torch.minimum), "max": (2, torch.maximum),
}
_BINARY = {ast.Add: torch.add, ast.Sub: torch.sub, ast.Mult: torch.mul, ast.Div: torch.div, ast.Pow: torch.pow}
_BINARY_TEXT = {ast.FloorDiv: "//", ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>",
                ast.BitOr: "|", ast.BitXor: "^", ast.BitAnd: "&", ast.Not: "not", ast.Invert: "~"}
# What a refused node is, in words (anything not listed is named by its ast class).
_KINDS = {
    ast.Attribute: "attribute access", ast.Lambda: "lambda", ast.ListComp: "comprehension",
    ast.SetComp: "comprehension", ast.DictComp: "comprehension", ast.GeneratorExp: "comprehension",
    ast.Subscript: "indexing", ast.Compare: "comparison", ast.BoolOp: "boolean operator",
    ast.IfExp: "conditional expression", ast.NamedExpr: "assignment", ast.List: "list", ast.Tuple: "tuple",
    ast.Dict: "dict", ast.Set: "set", ast.Starred: "unpacking", ast.JoinedStr: "f-string", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "slice",
}
MAX_LENGTH = 500

Node = Callable[[torch.Tensor], torch.Tensor]


def allowed_summary() -> str:
    return f"numbers, x, pi, e, + - * / **, and {', '.join(sorted(FUNCTIONS))}"


class Expression:
    """A checked formula in x; calling it on a tensor evaluates it with torch ops."""

    def __init__(self, source: str, key: str = "data.expr") -> None:
        self.source = str(source).strip()
        self.key = key
        if not self.source:
            raise ConfigError(f"{key} is empty; write a formula in x, e.g. {key}='sin(x) + x**2'")
        if len(self.source) > MAX_LENGTH:
            raise ConfigError(f"{key} is {len(self.source)} characters long; at most {MAX_LENGTH} are accepted")
        try:
            tree = ast.parse(self.source, mode="eval")
        except SyntaxError as err:
            raise ConfigError(f"{key}={self.source!r} is not a formula: {err.msg} (column {err.offset})") from None
        except (ValueError, RecursionError, MemoryError) as err:
            raise ConfigError(f"{key}={self.source!r} is not a formula: {type(err).__name__}") from None
        self._fn = self._build(tree.body)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        return self._fn(x).expand_as(x).clone()

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    # --- checking and building ------------------------------------------------------
    def _refuse(self, node: ast.AST, what: str) -> ConfigError:
        part = (ast.get_source_segment(self.source, node) or "").replace("\n", " ")
        return ConfigError(f"{self.key}={self.source!r}: {what} {part!r} is not allowed "
                           f"(allowed: {allowed_summary()})")

    def _build(self, node: ast.AST) -> Node:
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            if node.id == VARIABLE:
                return lambda x: x
            if node.id in CONSTANTS:
                return _const(CONSTANTS[node.id])
            raise self._refuse(node, "unknown name")
        if isinstance(node, ast.BinOp):
            op = _BINARY.get(type(node.op))
            if op is None:
                raise self._refuse(node, f"operator {_BINARY_TEXT.get(type(node.op), type(node.op).__name__)!r} in")
            left, right = self._build(node.left), self._build(node.right)
            return lambda x: op(left(x), right(x))
        if isinstance(node, ast.UnaryOp):
            operand = self._build(node.operand) if isinstance(node.op, (ast.USub, ast.UAdd)) else None
            if operand is None:
                raise self._refuse(node, f"operator {_BINARY_TEXT.get(type(node.op), type(node.op).__name__)!r} in")
            if isinstance(node.op, ast.UAdd):
                return operand
            return lambda x: torch.neg(operand(x))
        if isinstance(node, ast.Call):
            return self._call(node)
        raise self._refuse(node, _KINDS.get(type(node), type(node).__name__))

    def _constant(self, node: ast.Constant) -> Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            kind = {str: "string", bytes: "bytes", complex: "complex number"}.get(type(value), "constant")
            raise self._refuse(node, kind)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self._refuse(node, "number too large:")
        return _const(number)

    def _call(self, node: ast.Call) -> Node:
        if not isinstance(node.func, ast.Name):
            raise self._refuse(node.func, _KINDS.get(type(node.func), "call of"))
        name = node.func.id
        if name not in FUNCTIONS:
            raise self._refuse(node.func, "unknown function")
        if node.keywords:
            raise self._refuse(node.keywords[0], "keyword argument")
        arity, fn = FUNCTIONS[name]
        if len(node.args) != arity:
            raise ConfigError(f"{self.key}={self.source!r}: {name}() takes {arity} argument"
                              f"{'s' if arity > 1 else ''}, got {len(node.args)}")
        args = [self._build(a) for a in node.args]
        if arity == 1:
            (arg,) = args
            return lambda x: fn(arg(x))
        first, second = args
        return lambda x: fn(first(x), second(x))


def _const(value: float) -> Node:
    tensor = torch.tensor(value, dtype=torch.float64)
    return lambda x: tensor.to(x.device)
