"""lab: PyTorch Lightning + Hydra research framework.

Importing lab is cheap on purpose: torch and lightning are imported inside the
functions that need them, so `python -m lab.run --help` stays fast.
"""

__version__ = "0.1.0"

from lab.config.resolvers import register as _register_resolvers

_register_resolvers()
