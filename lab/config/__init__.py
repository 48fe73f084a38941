"""Composing and checking the config: where conf/ is, resolvers, checks before anything is built,
sweep checks, override quoting, the objective, --help and tab completion (no torch at import)."""
