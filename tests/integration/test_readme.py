"""The README's Python example runs as written (on the real CIFAR-10 copy)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import real_data_dir

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_readme_python_example_runs(monkeypatch, capsys):
    data = real_data_dir()
    if data is None or not (data / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("real CIFAR-10 not found: set TRAINWELL_DATA to the folder holding cifar10-jpeg.tar.gz")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    example = next(b for b in blocks if "trainwell.fit(" in b)
    monkeypatch.chdir(ROOT)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "'val_accuracy'" in printed and "'accuracy'" in printed
