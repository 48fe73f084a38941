"""Hydra's basic sweeper, checking each distinct config shape of a batch once, not every job.

Before launching, Hydra's BasicSweeper composes every job of the batch just to find errors
early, and the launcher then composes each job again: two compositions per job, about 0.2 s
each with lab's ~100 config files on 2 CPU cores. What that first pass can find depends only on
which config files a job is made of, which the group choices decide (`model=...`,
`experiment=...`, `hydra/launcher=...`): values such as `optimizer.lr=0.1,0.01` or seeds
compose the same way for every job. So this sweeper composes one job per distinct combination
of group choices: an 8-seed sweep is checked with one composition, `model=a,b optimizer.lr=...`
with two, and a job whose combination would fail still fails before any job runs.
Everything else (the job grid, batches, `hydra.sweeper.params`) is BasicSweeper's.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser


class LabSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        loader = self.hydra_context.config_loader if self.hydra_context is not None else self.config_loader
        parser = OverridesParser.create()
        seen: set[tuple[str, ...]] = set()
        representatives = []
        for overrides in batch:
            shape = tuple(sorted(
                override.input_line or "" for override in parser.parse_overrides(list(overrides))
                if loader.repository.group_exists(override.key_or_group)
            ))
            if shape not in seen:
                seen.add(shape)
                representatives.append(overrides)
        super().validate_batch_is_legal(representatives)
