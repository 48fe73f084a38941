"""lab's Hydra sweeper over Optuna's ask-and-tell API (Optuna 4 and later): `hydra/sweeper=lab_optuna`.

Why lab has its own: Hydra's Optuna sweeper 1.3 (the last release) needs optuna<3, whose SQL
storage does not work with SQLAlchemy 2, so its studies lived in memory and a killed search lost
them; its 1.4 pre-releases need Hydra 1.4 pre-releases. This one keeps the study in SQLite in the
sweep folder, resumes it when the same command runs again on that folder, runs a killed trial
again, and tells Optuna PRUNED for trials that lab's pruning callback stopped
(lab.callbacks.pruning). Options mirror the old plugin's: direction, study_name, storage,
n_trials, n_jobs, max_failure_rate, sampler, params (Hydra's sweep syntax), plus pruner.

Hydra imports every module of the `hydra_plugins` namespace package to find plugins; nothing
here imports optuna or torch at module level, so every `python -m lab.run` stays quick.
"""
