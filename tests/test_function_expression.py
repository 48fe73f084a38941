"""data.expr: formulas are parsed into a whitelist and evaluated with torch, never run as Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lab.data.expression import FUNCTIONS, Expression
from lab.errors import ConfigError
from tests.conftest import run_cli

X = np.linspace(-2.5, 2.5, 101)

ALLOWED = [
    ("x**2 + 2*cos(x) + 2*exp(-x)", lambda x: x**2 + 2 * np.cos(x) + 2 * np.exp(-x)),
    ("x**2 + 2*cos(x) + 2/exp(x)", lambda x: x**2 + 2 * np.cos(x) + 2 / np.exp(x)),
    ("-x + +3 - 2**-1", lambda x: -x + 3 - 0.5),
    ("sin(pi*x) * e", lambda x: np.sin(np.pi * x) * np.e),
    ("abs(x)**0.5 + sign(x)", lambda x: np.abs(x) ** 0.5 + np.sign(x)),
    ("max(x, 0) - min(x, 0.5)", lambda x: np.maximum(x, 0) - np.minimum(x, 0.5)),
    ("tanh(x) + arctan(x) + atan(x) + sinh(x/3) + cosh(x/3)",
     lambda x: np.tanh(x) + 2 * np.arctan(x) + np.sinh(x / 3) + np.cosh(x / 3)),
    ("log(x**2 + 1) + log10(x**2 + 1) + log2(x**2 + 1) + sqrt(x**2)",
     lambda x: np.log(x**2 + 1) + np.log10(x**2 + 1) + np.log2(x**2 + 1) + np.abs(x)),
    ("floor(x) + ceil(x) + tan(x/4) + arcsin(x/3) + arccos(x/3)",
     lambda x: np.floor(x) + np.ceil(x) + np.tan(x / 4) + np.arcsin(x / 3) + np.arccos(x / 3)),
    ("3", lambda x: np.full_like(x, 3.0)),
    ("(x - 1) * (x + 1) / 4", lambda x: (x - 1) * (x + 1) / 4),
]


@pytest.mark.parametrize("source,reference", ALLOWED, ids=[s for s, _ in ALLOWED])
def test_allowed_formulas_match_numpy(source, reference):
    values = Expression(source)(torch.from_numpy(X)).numpy()
    assert values.shape == X.shape
    np.testing.assert_allclose(values, reference(X), rtol=1e-12, atol=1e-12)


def test_every_listed_function_is_usable():
    for name, (arity, _) in FUNCTIONS.items():
        args = ", ".join(["x / 4"] * arity)
        values = Expression(f"{name}({args})")(torch.linspace(-1, 1, 9))
        assert values.shape == (9,)


REFUSED = [
    ("__import__('os').system('true')", "attribute access", "__import__('os').system"),
    ("__import__('os')", "unknown function", "__import__"),
    ("x.real", "attribute access", "x.real"),
    ("(lambda: 1)()", "lambda", "lambda: 1"),
    ("[x for x in range(3)]", "comprehension", "[x for x in range(3)]"),
    ("sum(x for x in range(3))", "unknown function", "sum"),
    ("'abc'", "string", "'abc'"),
    ("x + 'a'", "string", "'a'"),
    ("y + 1", "unknown name", "y"),
    ("foo(x)", "unknown function", "foo"),
    ("open('/etc/passwd')", "unknown function", "open"),
    ("x[0]", "indexing", "x[0]"),
    ("x if x else 1", "conditional expression", "x if x else 1"),
    ("x > 1", "comparison", "x > 1"),
    ("x and 1", "boolean operator", "x and 1"),
    ("x // 2", "operator '//'", "x // 2"),
    ("x % 2", "operator '%'", "x % 2"),
    ("~x", "operator '~'", "~x"),
    ("not x", "operator 'not'", "not x"),
    ("(y := 2)", "assignment", "y := 2"),
    ("sin(x=1)", "keyword argument", "x=1"),
    ("sin(*x)", "unpacking", "*x"),
    ("True + x", "constant", "True"),
    ("1j * x", "complex number", "1j"),
    ("1e999 * x", "number too large", "1e999"),
    ("[1, 2]", "list", "[1, 2]"),
    ("f'{x}'", "f-string", "f'{x}'"),
    ("x.__class__.__bases__", "attribute access", "x.__class__.__bases__"),
]


@pytest.mark.parametrize("source,what,part", REFUSED, ids=[s for s, _, _ in REFUSED])
def test_refused_formulas_name_the_offending_part(source, what, part):
    with pytest.raises(ConfigError) as err:
        Expression(source)
    message = str(err.value)
    assert "\n" not in message
    assert what in message, message
    assert repr(part) in message, message
    assert message.startswith(f"data.expr={source!r}")


@pytest.mark.parametrize("source,expected", [
    ("x +", "is not a formula"),
    ("x = 1", "is not a formula"),
    ("import os", "is not a formula"),
    ("", "is empty"),
    ("x" + "+x" * 300, "at most 500"),
    ("sin(x, x)", "sin() takes 1 argument, got 2"),
    ("max(x)", "max() takes 2 arguments, got 1"),
])
def test_malformed_formulas_are_refused(source, expected):
    with pytest.raises(ConfigError) as err:
        Expression(source)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_refused_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    for source in (f"__import__('os').system('touch {marker}')",
                   f"[__import__('pathlib').Path('{marker}').touch() for _ in 'a']",
                   f"(lambda: __import__('pathlib').Path('{marker}').touch())()"):
        with pytest.raises(ConfigError):
            Expression(source)(torch.zeros(2))
    assert not marker.exists()


def test_overflow_gives_inf_not_a_hang():
    """Powers are torch ops on floats, so a huge power is inf at once, not a Python bignum."""
    values = Expression("10**10**10 + x")(torch.zeros(3))
    assert torch.isinf(values).all()


def test_cli_refuses_code_before_anything_runs(tmp_path):
    """As typed in a shell, `data.expr="__import__('os').system('touch ...')"` reaches lab unquoted."""
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    result = run_cli(["experiment=mlp_function", f"data.expr=__import__('os').system('touch {marker}')",
                      f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert "attribute access" in errors[0] and "__import__('os').system" in errors[0]
    assert not marker.exists()
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
    assert not list(run_dir.glob("events.out.tfevents.*"))


@pytest.mark.parametrize("arg", ["data.expr=x**2 + 2*cos(x) + 2/exp(x)", 'data.expr="x**2 + 2*cos(x) + 2/exp(x)"',
                                 "data.expr='x**2 + 2*cos(x) + 2/exp(x)'"])
def test_cli_takes_formulas_quoted_or_not(arg, tmp_path):
    """Hydra would read an unquoted cos(x) as its own function; lab.run quotes data.expr for it."""
    from omegaconf import OmegaConf

    result = run_cli(["experiment=mlp_function", arg, "--cfg", "job"], cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert OmegaConf.create(result.stdout).data.expr == "x**2 + 2*cos(x) + 2/exp(x)"
