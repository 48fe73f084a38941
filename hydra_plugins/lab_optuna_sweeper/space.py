"""Hydra's sweep syntax to Optuna distributions, parsed with Hydra's own override parser.

`choice(a,b)` -> categorical; `range(a,b[,step])` -> integers (or floats) from a up to but not
including b, as Hydra's basic sweeper reads it (`shuffle(range(...))`: categorical);
`interval(a,b)` -> uniform float; `tag(log, interval(a,b))` -> log-uniform, `tag(log, range(a,b))`
-> log-uniform integer. Anything else is a value every trial gets. A key given again replaces
the earlier one, and a plain value (`model.dropout=0.2`) takes a key out of the search.
"""

from __future__ import annotations

from typing import Any

from lab.errors import ConfigError

FORMS = "choice(a,b,...), range(start,stop[,step]), interval(low,high), tag(log,interval(low,high))"


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(key -> Optuna distribution, the overrides every trial gets) of `arguments` (key=value strings)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for text in arguments:
        try:
            override = parser.parse_overrides([text])[0]
        except OverrideParseException as err:
            message = " ".join(str(err).split("See https://")[0].split())
            raise ConfigError(f"{text}: cannot parse ({message})") from None
        key = override.get_key_element()
        if override.is_sweep_override():
            space[key] = distribution(override, text)
        else:
            fixed[key] = text
    for key in fixed:
        space.pop(key, None)
    return space, list(fixed.values())


def distribution(override: Any, text: str) -> Any:
    """The Optuna distribution of one sweep override; ConfigError (naming it) for other sweeps."""
    from hydra.core.override_parser.types import Glob, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, Glob):
        raise ConfigError(f"{text}: Optuna cannot search a glob over config options; list them: choice(a,b,...)")
    tags = set(getattr(value, "tags", None) or ())
    try:
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            if override.is_range_sweep():
                choices.sort()  # the same distribution at every launch (resume checks it)
            if not choices:
                raise ValueError("no values")
            return CategoricalDistribution(choices)
        if override.is_range_sweep():
            values = list(override.sweep_iterator())
            if not values:
                raise ValueError("the range is empty")
            low, high, step = min(values), max(values), abs(value.step)
            if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                if "log" in tags:
                    if step != 1:
                        raise ValueError("a log range takes no step")
                    return IntDistribution(int(low), int(high), log=True)
                return IntDistribution(int(low), int(high), step=int(step))
            if "log" in tags:
                raise ValueError("a log range of floats: use tag(log, interval(low, high))")
            return FloatDistribution(float(low), float(high), step=float(step))
        if override.is_interval_sweep():
            return FloatDistribution(float(value.start), float(value.end), log="log" in tags)
    except ValueError as err:
        raise ConfigError(f"{text}: {' '.join(str(err).split())}; Optuna searches {FORMS}") from None
    raise ConfigError(f"{text}: Optuna cannot search a {override.value_type.name.lower()}; use one of {FORMS}")


def override_value(value: Any) -> str:
    """A trial's parameter as the job's override value: numbers as Python writes them, choices as parsed."""
    return str(value)
