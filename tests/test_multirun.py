"""A real `python -m lab.run -m` sweep, read back through a real TensorBoard server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import QUICK, ROOT, run_cli


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    # The issue's own command: 1 epoch (limited batches keep it quick).
    result = run_cli(["-m", "optimizer.lr=0.1,0.01", "trainer.max_epochs=1", *QUICK[1:], f"hydra.sweep.dir={out}"],
                     cwd=out)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_two_jobs_each_with_their_own_folder(sweep_dir):
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert 0.0 <= metrics["test/top1"] <= 1.0
        assert (job / "checkpoints" / "last.ckpt").exists()
        assert list(job.glob("events.out.tfevents.*")), f"no TensorBoard events in {job}"
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        lrs.append([v for v in ("0.1", "0.01") if f"optimizer.lr={v}\n" in overrides])
    assert lrs == [["0.1"], ["0.01"]]
    assert (sweep_dir / "multirun.yaml").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={
        "Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_hparams_dashboard_lists_both_jobs_with_lr_and_metrics(sweep_dir):
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(sweep_dir), "--host", "127.0.0.1",
         "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    base = f"http://127.0.0.1:{port}/data/plugin/hparams"
    request = {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                            "STATUS_RUNNING"],
               "colParams": [], "startIndex": 0, "sliceSize": 100}
    groups = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                groups = _post(f"{base}/session_groups", request).get("sessionGroups", [])
                if len(groups) == 2 and all(g.get("metricValues") for g in groups):
                    break
            except OSError:
                pass
            time.sleep(1)
        experiment = _post(f"{base}/experiment", {"experimentName": ""})
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert len(groups) == 2, groups
    assert sorted(g["hparams"]["optimizer.lr"] for g in groups) == [0.01, 0.1]
    hparam_names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"optimizer.lr", "seed", "data", "model"} <= hparam_names
    for group in groups:
        values = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        for tag in ("val/top1_best", "test/top1", "test/loss"):
            assert tag in values, sorted(values)
        assert "hp_metric" not in values
