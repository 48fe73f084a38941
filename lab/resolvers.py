"""OmegaConf resolvers that configs use (registered when lab is imported)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _if(condition, then, otherwise):
    """${lab_if:${upsample},224,null}: a switch in one line of YAML."""
    return then if condition else otherwise


def register() -> None:
    if not OmegaConf.has_resolver("lab_if"):
        OmegaConf.register_new_resolver("lab_if", _if)
