"""Progress bars on stderr for the slow, one-off steps of loading data: downloads and first decodes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, *, in_bytes: bool = False
) -> Iterator[Callable[[int], None]]:
    """Show a bar on stderr while the block runs; the block calls the yielded function with each increment.

    ``total=None`` (e.g. a server that sends no length) shows a pulsing bar. stdout stays clean for ``--json``.
    """
    counts = (DownloadColumn(), TransferSpeedColumn()) if in_bytes else (MofNCompleteColumn(),)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(description, total=total)
    with bar:
        yield lambda n: bar.advance(task, n)
