"""One job of hydra/launcher=gpus in its own process.

    python -m hydra_plugins.lab_launcher._job <common.pkl> <job.json> <result.pkl>

GpuLauncher starts it with CUDA_VISIBLE_DEVICES already set to the job's one device. The job is
composed and run the way Hydra's basic launcher runs it (load_sweep_config, job id = num = its
index, run_job), after Hydra's singletons and resolvers are restored as its joblib launcher does.
<result> receives ("job", JobReturn, one-line failure or None), or ("launch_error", exception)
when the job could not even be composed. The name starts with "_", so Hydra's plugin scan
(which imports every other module under hydra_plugins/) leaves it alone.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run(num: int, overrides: Sequence[str], hydra_context: Any, config: Any, task_function: Any,
        singleton_state: Any) -> Any:
    """The job's JobReturn, from run_job exactly as hydra._internal.core_plugins.basic_launcher calls it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import open_dict

    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = num
        sweep_config.hydra.job.num = num
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _portable(err: BaseException) -> BaseException:
    """`err` if it survives pickling, else a RuntimeError with its type and text (an exception whose
    constructor takes other arguments than its message cannot be rebuilt in the sweep's process)."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(f"{type(err).__name__}: {err}")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def outcome_of(ret: Any) -> bytes:
    """The pickled ("job", JobReturn, failure line or None) for the sweep's process."""
    import cloudpickle
    from hydra.core.utils import JobStatus

    message, value = None, None
    try:
        value = ret.return_value  # a failed job's exception is raised here (and named in this job's log)
    except Exception as error:  # noqa: BLE001 - whatever the job raised
        traceback.print_exception(type(error), error, error.__traceback__)
        ret.return_value = _portable(error)
        message = _one_line(error)
    try:
        return cloudpickle.dumps(("job", ret, message))
    except Exception as err:  # noqa: BLE001 - the job's return value cannot travel
        error = RuntimeError(f"the job's return value ({type(value).__name__}) cannot be sent back to the sweep: "
                             f"{_one_line(err)}")
        ret.status = JobStatus.FAILED
        ret.return_value = error
        return cloudpickle.dumps(("job", ret, _one_line(error)))


def follow_parent(parent: int) -> None:
    """End this job when the sweep's process is gone (killed with SIGKILL, where it cannot stop its jobs):
    SIGTERM to itself (Lightning stops at it), a hard exit 10 s later. A job never outlives its sweep."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10.0)
        os._exit(1)

    threading.Thread(target=watch, name="lab-launcher-follow-parent", daemon=True).start()


def main(argv: Sequence[str]) -> int:
    common, job_file, result = (Path(a) for a in argv)
    job = json.loads(job_file.read_text())
    follow_parent(int(job["parent"]))
    # The sweep process's import path, so the task function and configs load as they did there.
    sys.path[:] = [*job["sys_path"], *(p for p in sys.path if p not in job["sys_path"])]
    from lab.utils.shutdown import skip_final_collection

    skip_final_collection()
    try:
        hydra_context, config, task_function, singleton_state = pickle.loads(common.read_bytes())
        ret = run(int(job["num"]), job["overrides"], hydra_context, config, task_function, singleton_state)
    except Exception as err:  # noqa: BLE001 - the sweep's process reports it and stops the launch
        traceback.print_exc()
        import cloudpickle

        data = cloudpickle.dumps(("launch_error", _portable(err)))
    else:
        data = outcome_of(ret)
    sys.stdout.flush()
    sys.stderr.flush()
    partial = result.with_name(result.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, result)  # the sweep reads whole results only
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
