"""provenance.json (lab.runs.provenance) and run folders that launches at the same moment never share
(${lab_unique_dir:...} in conf/hydra/default.yaml, lab.runs.folder.claim)."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import QUICK, ROOT, run_in_process

# A Hydra app on lab's config that only records its provenance: ten of them start in a second or two.
RUN_APP = textwrap.dedent('''
    import hydra

    import lab  # noqa: F401  (lab's resolvers: the run folder)
    from lab.config.paths import config_dir


    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
    def main(cfg):
        from hydra.core.hydra_config import HydraConfig

        from lab.runs.provenance import write_provenance

        write_provenance(HydraConfig.get().runtime.output_dir)


    if __name__ == "__main__":
        main()
''')


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def _launch_at_once(commands: list[list[str]], cwd: Path, env: dict) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(c, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in commands]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, out, "") for p, out in zip(procs, outputs)]


# --- folders ---------------------------------------------------------------------------------------
def test_ten_claims_of_one_name_at_once_get_ten_folders(tmp_path):
    """Ten processes and ten threads claim the same path at the same moment: each gets its own folder."""
    base = tmp_path / "runs" / "2024-01-01_00-00-00_digits_small_cnn"
    code = "import sys; from lab.runs.folder import claim; print(claim(sys.argv[1]))"
    results = _launch_at_once([[sys.executable, "-c", code, str(base)] for _ in range(10)], ROOT,
                              {**os.environ, "PYTHONPATH": str(ROOT)})
    assert all(r.returncode == 0 for r in results), [r.stdout for r in results]
    claimed = sorted(r.stdout.strip() for r in results)
    assert claimed == sorted([str(base)] + [f"{base}_{k}" for k in range(1, 10)])

    from lab.runs.folder import claim

    got: list[str] = []
    start = threading.Barrier(10)

    def worker() -> None:
        start.wait()
        got.append(claim(base))

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"{base}_{k}" for k in range(10, 20)]
    assert all(not any(Path(p).iterdir()) for p in got)  # created empty


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    from lab.errors import ConfigError
    from lab.runs.folder import claim

    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^cannot create the run folder .*/file/run: .*; set LAB_OUTPUT_DIR"):
        claim(tmp_path / "file" / "run")


def test_the_resolver_keeps_its_folder_in_the_config(tmp_path, monkeypatch):
    """Resolved again, copied (Hydra's job configs) or pickled (a launcher's job process), the config
    names the same folder; a new config claims the next one."""
    from hydra.core.hydra_config import HydraConfig

    import lab  # noqa: F401  (registers the resolver)

    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # no Hydra job in this process
    node = {"dir": "${lab_unique_dir:" + str(tmp_path / "runs" / "x") + "}"}
    cfg = OmegaConf.create(node)
    first = cfg.dir
    assert first == str(tmp_path / "runs" / "x") and Path(first).is_dir()
    assert cfg.dir == first and pickle.loads(pickle.dumps(cfg)).dir == first
    copy = OmegaConf.create(node)
    OmegaConf.copy_cache(from_config=cfg, to_config=copy)
    assert copy.dir == first
    assert OmegaConf.create(node).dir == f"{first}_1"


def test_a_config_composed_with_its_folder_creates_no_other(tmp_path, monkeypatch):
    """lab.config.compose(output_dir=...) (tests, notebooks): resolving everything creates nothing in outputs/."""
    from tests.conftest import compose

    monkeypatch.setenv("LAB_OUTPUT_DIR", str(tmp_path / "outputs"))
    cfg = compose([], output_dir=tmp_path / "job")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["hydra"]["run"]["dir"].endswith("_digits_small_cnn")
    assert not (tmp_path / "outputs").exists()


def test_ten_hydra_runs_started_at_once_get_ten_folders_each_with_its_provenance(tmp_path):
    """Ten processes of a Hydra app on lab's config, all naming the same run folder (so they surely
    collide, whatever second each starts in): ten folders, each with its own provenance.json."""
    (tmp_path / "app.py").write_text(RUN_APP)
    base = tmp_path / "runs" / "same"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    results = _launch_at_once([[sys.executable, str(tmp_path / "app.py"), f"hydra.run.dir=${{lab_unique_dir:{base}}}"]
                               for _ in range(10)], tmp_path, env)
    elapsed = time.perf_counter() - start
    assert all(r.returncode == 0 for r in results), [r.stdout[-2000:] for r in results]
    folders = sorted(p.name for p in base.parent.iterdir())
    assert folders == sorted(["same"] + [f"same_{k}" for k in range(1, 10)])
    pids = {json.loads((base.parent / f / "provenance.json").read_text())["pid"] for f in folders}
    assert len(pids) == 10  # each folder's record is its own process's
    print(f"10 Hydra runs at once: {elapsed:.1f} s")


def test_two_sweeps_started_at_once_get_two_folders_with_their_jobs(tmp_path):
    """The sweep folder is claimed once, in the sweep's process; every job of the sweep lands in it."""
    (tmp_path / "app.py").write_text(RUN_APP)
    base = tmp_path / "multiruns" / "same"
    command = [sys.executable, str(tmp_path / "app.py"), "-m", "seed=1,2",
               f"hydra.sweep.dir=${{lab_unique_dir:{base}}}"]
    results = _launch_at_once([command, command], tmp_path, {**os.environ, "PYTHONPATH": str(ROOT)})
    assert all(r.returncode == 0 for r in results), [r.stdout[-2000:] for r in results]
    assert sorted(p.name for p in base.parent.iterdir()) == ["same", "same_1"]
    for sweep in base.parent.iterdir():
        assert (sweep / "multirun.yaml").is_file()
        assert all((sweep / job / "provenance.json").is_file() for job in ("0", "1"))


# --- provenance.json -------------------------------------------------------------------------------
def test_provenance_records_commit_versions_host_and_devices(tmp_path, monkeypatch):
    from lab.runs.provenance import PACKAGES, write_provenance

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    path = write_provenance(tmp_path)
    record = json.loads(path.read_text())
    git = record["git"]
    assert git["available"] and git["root"] == str(ROOT) and git["commit"] == _git(ROOT, "rev-parse", "HEAD")
    assert isinstance(git["dirty"], bool) and (git["diff_sha256"] is None) == (not git["dirty"])
    for name in PACKAGES:
        assert record["versions"][name] == version(name)
    assert record["versions"]["python"].startswith(".".join(map(str, sys.version_info[:3])))
    assert record["host"] == socket.gethostname()
    devices = record["devices"]
    assert devices["CUDA_VISIBLE_DEVICES"] == "1" and devices["cpu"] and devices["cuda"]
    assert record["command"] and record["cwd"] == os.getcwd() and "previous" not in record


def test_git_state_clean_dirty_and_untracked(tmp_path):
    """A hash of `git diff HEAD` and the untracked names: equal trees give equal hashes, any change another."""
    from lab.runs.provenance import git_state

    repo = tmp_path / "repo"
    (repo / "lab").mkdir(parents=True)
    (repo / "lab" / "__init__.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "first")
    clean = git_state(repo / "lab")
    assert clean["available"] and clean["commit"] == _git(repo, "rev-parse", "HEAD")
    assert clean["dirty"] is False and clean["diff_sha256"] is None and clean["changed"] == []

    (repo / "lab" / "__init__.py").write_text("x = 2\n")
    edited = git_state(repo / "lab")
    assert edited["dirty"] and edited["changed"] == ["lab/__init__.py"] and len(edited["diff_sha256"]) == 64
    assert git_state(repo / "lab")["diff_sha256"] == edited["diff_sha256"]
    (repo / "notes.txt").write_text("new\n")
    untracked = git_state(repo / "lab")
    assert untracked["untracked"] == ["notes.txt"] and untracked["diff_sha256"] != edited["diff_sha256"]
    (repo / "lab" / "__init__.py").write_text("x = 3\n")
    assert git_state(repo / "lab")["diff_sha256"] != untracked["diff_sha256"]


def test_without_a_checkout_the_file_says_why(tmp_path, monkeypatch):
    from lab.runs.provenance import git_state

    installed = git_state(tmp_path / "venv" / "lib" / "python3.11" / "site-packages" / "lab")
    assert installed["available"] is False and "installed package" in installed["reason"]
    (tmp_path / "plain" / "lab").mkdir(parents=True)
    plain = git_state(tmp_path / "plain" / "lab")
    assert plain["available"] is False and "not a usable git checkout" in plain["reason"]
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_state()["reason"] == "git is not installed"


def test_a_second_launch_keeps_the_first_under_previous(tmp_path):
    from lab.runs.provenance import write_provenance

    write_provenance(tmp_path)
    first = json.loads((tmp_path / "provenance.json").read_text())
    write_provenance(tmp_path)
    write_provenance(tmp_path)
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert len(record["previous"]) == 2 and record["previous"][-1] == first
    assert all("previous" not in p for p in record["previous"])


def test_writing_it_never_stops_a_run(tmp_path, capsys):
    from lab.runs.provenance import write_provenance

    (tmp_path / "not_a_folder").write_text("")
    assert write_provenance(tmp_path / "not_a_folder") is None
    assert "note: provenance.json not written" in capsys.readouterr().out


def test_it_is_cheap():
    """Once the run has loaded torch and Lightning (as a run has by then): git, metadata, host, devices."""
    import lightning  # noqa: F401

    from lab.runs.provenance import collect

    collect()  # the device query's first call
    times = []
    for _ in range(3):
        start = time.perf_counter()
        collect()
        times.append(time.perf_counter() - start)
    print(f"provenance: {min(times) * 1000:.0f} ms")
    assert min(times) < 1.0  # typically 30-70 ms; generous for a busy 2-core machine


def test_a_run_that_fails_has_its_provenance(tmp_path):
    """Written before the data and model are built: a run whose loss turns nan still records what it ran."""
    from lab.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        run_in_process(["optimizer.lr=1e30", "logger=none", *QUICK], tmp_path)
    assert not (tmp_path / "metrics.json").exists()
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["git"]["available"] and record["versions"]["lab"] == version("lab")


@pytest.mark.slow  # ten processes importing torch and Lightning at once: ~1-3 min on 2 cores
def test_ten_lab_runs_launched_at_once_get_ten_folders(tmp_path):
    """The acceptance check with the real command and the default folder names (timestamp + name)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAB_OUTPUT_DIR": str(tmp_path / "outputs")}
    command = [sys.executable, "-m", "lab.run", "trainer.fast_dev_run=true", "logger=none"]
    results = _launch_at_once([command] * 10, tmp_path, env)
    assert all(r.returncode == 0 for r in results), [r.stdout[-2000:] for r in results]
    folders = sorted((tmp_path / "outputs" / "runs").iterdir())
    assert len(folders) == 10 and all(f.name.split("_digits_small_cnn")[0] for f in folders), folders
    commits = {json.loads((f / "provenance.json").read_text())["git"]["commit"] for f in folders}
    assert commits == {_git(ROOT, "rev-parse", "HEAD")}
