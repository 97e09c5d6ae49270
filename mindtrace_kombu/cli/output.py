"""Rendering: rich tables and progress bars on a terminal, plain text when piped, JSON on request.

Results go to stdout; notes, prompts and progress bars go to stderr, so ``> file`` and ``| jq``
capture only the result.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

__all__ = ["Cell", "Output"]

Cell = str | int | float | None


def _text(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return f"{cell:,.2f}"
    return str(cell)


class Output:
    """Where and how a command prints. Thread-safe: worker events arrive from handler threads."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self._lock = threading.Lock()

    @property
    def rich(self) -> bool:
        """Whether stdout is a terminal that gets rich tables."""
        return not self.json_mode and sys.stdout.isatty()

    def json(self, data: Any) -> None:
        """Print one JSON document on one line."""
        self._echo(json.dumps(data, default=str, ensure_ascii=False))

    def line(self, text: str) -> None:
        """Print a result line (stdout)."""
        self._echo(text)

    def result(self, data: Any, text: str) -> None:
        """Print ``data`` as JSON in ``--json`` mode, else the human ``text``."""
        if self.json_mode:
            self.json(data)
        else:
            self.line(text)

    def note(self, text: str) -> None:
        """Print a remark for people (stderr); silent in ``--json`` mode."""
        if not self.json_mode:
            with self._lock:
                click.echo(text, err=True)

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[Cell]], title: str | None = None
    ) -> None:
        """A rich table on a terminal (numbers right-aligned), else plain columns, header first."""
        if self.rich:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for i, header in enumerate(headers):
                numeric = all(isinstance(row[i], (int, float)) or row[i] is None for row in rows)
                table.add_column(header, justify="right" if numeric and rows else "left")
            for row in rows:
                table.add_row(*(_text(cell) for cell in row))
            Console().print(table)
            return
        cells = [list(headers), *([_text(cell) for cell in row] for row in rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
        for row in cells:
            self._echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; draws a bar on stderr if it is a terminal, unless ``--json``."""
        if self.json_mode or not sys.stderr.isatty():
            yield lambda n: None
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    def _echo(self, text: str) -> None:
        with self._lock:
            click.echo(text)
