"""`data.classes`: which classes of a dataset a run keeps, shared by the datamodules that offer it.

One spelling everywhere: null keeps all, an integer N the first N (in the dataset's own order),
a list names them (by name, by another accepted name such as a wnid's words, or by index). The
kept classes are relabelled 0..K-1 in the order given, so a subset trains like a smaller dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

from lab.errors import ConfigError


def select_classes(wanted: int | Sequence[str | int] | None, names: Sequence[str],
                   aliases: Sequence[str] | None = None, key: str = "data.classes") -> list[int]:
    """Indices into `names` of the classes `wanted` keeps, in its order. `aliases[i]` is a second
    name of class i (matched only when it names one class)."""
    names = list(names)
    if wanted is None or (not isinstance(wanted, (int, str)) and len(wanted) == 0):
        return list(range(len(names)))
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        if not 1 <= wanted <= len(names):
            raise ConfigError(f"{key}={wanted}: keep from 1 to {len(names)} classes (or list them by name)")
        return list(range(wanted))
    if isinstance(wanted, str):
        wanted = [wanted]
    alias_index: dict[str, int] = {}
    for i, alias in enumerate(aliases or ()):
        alias_index[alias] = -1 if alias in alias_index else i  # -1: the alias names several classes
    chosen = []
    for c in wanted:
        if isinstance(c, int) and not isinstance(c, bool):
            if not 0 <= c < len(names):
                raise ConfigError(f"{key}: index {c} out of range 0..{len(names) - 1}")
            chosen.append(c)
        elif str(c) in names:
            chosen.append(names.index(str(c)))
        elif alias_index.get(str(c), -1) >= 0:
            chosen.append(alias_index[str(c)])
        else:
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            ambiguous = " (that name belongs to several classes)" if alias_index.get(str(c)) == -1 else ""
            raise ConfigError(f"{key}: unknown class {c!r}{ambiguous}; classes are {shown}")
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"{key} lists a class twice: {list(wanted)}")
    return chosen
