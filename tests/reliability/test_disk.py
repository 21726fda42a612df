"""Disk: a failed write — a read-only folder, a full disk, a process killed in the middle of a write — leaves
the previous checkpoint intact and the error says where; the CLI exits non-zero with a message, not a
traceback; and the run resumes to the result it would have had.

The faults are real, in a real ``trainwell train`` process frozen in the middle of an epoch: its run folder
made read-only (root, who may write anywhere, is first stripped of CAP_DAC_OVERRIDE so that permissions
bind it too), or its file-size limit lowered (RLIMIT_FSIZE, which the kernel enforces by failing the write
that would cross it: a disk that fills up part-way through a checkpoint).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import (
    assert_same_weights,
    checkpoint_epoch,
    comparable,
    finish,
    freeze_mid_epoch,
    history_rows,
    leftovers,
    model_state,
    start,
)
from trainwell.cli import main
from trainwell.runs import run_status

# Runs trainwell with CAP_DAC_OVERRIDE dropped from the bounding set: after the exec, even root obeys file
# permissions. PR_CAPBSET_DROP is 24, CAP_DAC_OVERRIDE is 1 (linux/prctl.h, linux/capability.h).
WITHOUT_DAC_OVERRIDE = [
    sys.executable,
    "-c",
    """
import ctypes, os, sys
if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:
    sys.exit(f"cannot drop CAP_DAC_OVERRIDE (errno {ctypes.get_errno()})")
os.execv(sys.executable, [sys.executable, "-m", "trainwell", *sys.argv[1:]])
""",
]


def resume_and_compare(run: Path, reference: Path) -> None:
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert comparable(history_rows(run)) == comparable(history_rows(reference))
    assert_same_weights(model_state(run), model_state(reference))
    assert not leftovers(run)


@pytest.fixture
def reference(tmp_path: Path, config: Path) -> Path:
    path = tmp_path / "reference"
    assert main(["train", str(config), "--out", str(path), "--quiet"]) == 0
    return path


def test_read_only_run_folder(tmp_path, config, reference):
    run = tmp_path / "run"
    proc = start(
        ["train", str(config), "--out", str(run), "--quiet"], command=WITHOUT_DAC_OVERRIDE, cwd=tmp_path
    )
    epoch = freeze_mid_epoch(proc, run)
    run.chmod(0o555)
    try:
        proc.send_signal(signal.SIGCONT)
        code, _, err = finish(proc)
    finally:
        run.chmod(0o755)

    assert code == 1 and "Traceback" not in err
    assert f"cannot write {run / 'history.csv'}: Permission denied; the previous history.csv is intact" in err
    assert checkpoint_epoch(run) == epoch and len(history_rows(run)) == epoch and not leftovers(run)
    # run.json could not say "failed" either; the run is found crashed, and resumes.
    assert json.loads((run / "run.json").read_text())["status"] == "running" and run_status(run) == "crashed"
    resume_and_compare(run, reference)


def test_disk_full_in_the_middle_of_a_checkpoint(tmp_path, config, reference):
    run = tmp_path / "run"
    proc = start(["train", str(config), "--out", str(run), "--quiet"], cwd=tmp_path)
    epoch = freeze_mid_epoch(proc, run)
    size = (run / "checkpoint.pt").stat().st_size
    assert size > 8 * (run / "history.csv").stat().st_size  # so the limit below falls between the two
    _, hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size // 2, hard))  # half a checkpoint fits, no more
    proc.send_signal(signal.SIGCONT)
    code, _, err = finish(proc)

    assert code == 1 and "Traceback" not in err
    assert (
        f"cannot write {run / 'checkpoint.pt'}: File too large; the previous checkpoint.pt is intact" in err
    )
    assert checkpoint_epoch(run) == epoch and (run / "checkpoint.pt").stat().st_size == size
    assert not leftovers(run)  # the half-written temporary file was removed
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "checkpoint.pt" in info["error"]
    assert len(history_rows(run)) == epoch + 1  # written before the checkpoint; the resume rewrites it
    resume_and_compare(run, reference)


def test_killed_in_the_middle_of_a_write_the_previous_file_is_intact(tmp_path):
    """SIGKILL while half of the new content is on disk: the target keeps its old content; the temporary
    file that is left over is removed by the next resume (see test_exact_resume)."""
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old" * 1000)
    script = """
import os, signal, sys
from trainwell.io import write_with

def writer(f):
    f.write(b"new" * 100_000)
    f.flush()  # half of the new version is on disk...
    os.kill(os.getpid(), signal.SIGKILL)  # ...when the process dies

write_with(sys.argv[1], writer)
"""
    proc = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old" * 1000
    (tmp,) = leftovers(tmp_path)
    assert tmp.startswith(".checkpoint.pt.") and (tmp_path / tmp).stat().st_size == 300_000


def test_a_run_folder_that_cannot_be_created_is_a_clear_error(tmp_path, config, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the runs folder should be")
    assert main(["train", str(config), "--runs", str(blocker / "runs"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cannot create the run folder {blocker / 'runs'}" in err and "Not a directory" in err
