"""A component stopped by a fault-injection test counts as up for other sessions while that test lives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kto_bed import cli
from kto_bed.paths import BedPaths


def test_held_down_only_while_the_holder_lives(tmp_path: Path) -> None:
    paths = BedPaths(tmp_path)
    assert not cli.held_down(paths, "mlflow")
    cli.stop_component(paths, "mlflow")  # nothing runs under tmp_path: only the marker is written
    assert cli.held_down(paths, "mlflow")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (paths.pids / "mlflow.held").write_text(dead.stdout.strip())
    assert not cli.held_down(paths, "mlflow"), "a crashed test must not keep the bed 'up' forever"


def test_status_quiet_counts_held_components(tmp_path: Path) -> None:
    paths = BedPaths(tmp_path)
    paths.env_file.parent.mkdir(parents=True, exist_ok=True)
    paths.env_file.write_text("")
    for name in cli.ORDER_DOWN:
        cli.stop_component(paths, name)
    assert cli.status_quiet(paths)
    (paths.pids / "etcd.held").unlink()
    assert not cli.status_quiet(paths)
