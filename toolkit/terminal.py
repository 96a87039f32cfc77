"""What a terminal shows of the runs it started: a bar per phase, quiet logs, the run's link.

Scenario: a person starts a long flow from a terminal (`python -m flows.ledger_sync`, `make
demo`). Prefect's console prints a log line per task run, thousands for one sync, which
buries the few that matter and says nothing about how far the run is.

Solution: inside `terminal_view()` each `toolkit.report.Progress` of the runs it wraps is
shown: a rich progress bar per phase on a terminal (rich ships with Prefect), a few plain
lines when the output is not a terminal (a pipe, a log file: a line per phase every 10 s
at most, and one at its end). Prefect's console handler shows only warnings and errors,
unless `verbose`, or Prefect's own PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL set a level; its
API handler is left alone, so every log still reaches the run's Logs tab in the UI. The bars
draw on the console of Prefect's console handler, so a log line prints above them, not
through them. `run_link` is a run's page in the UI, for the last line a CLI prints.

How to run:
    with terminal_view(verbose="--verbose" in sys.argv):
        state = my_flow(return_state=True)
    print(run_link(state.state_details.flow_run_id))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol
from uuid import UUID

from rich.console import Console


class Display(Protocol):
    """Where a terminal shows the phases of a run (see `terminal_view`)."""

    def update(self, description: str, done: int, total: int | None) -> None: ...

    def finish(self, description: str, done: int) -> None: ...


_DISPLAY: ContextVar[Display | None] = ContextVar("resilient_flows_progress", default=None)


def current_display() -> Display | None:
    """The display of the `terminal_view` this code runs in, if any."""
    return _DISPLAY.get()


BAR_STYLES = ("bar.", "progress.")
"""The rich styles a progress bar draws with."""


class Bars:
    """A rich progress bar per phase (by description: a phase run again, after a flow retry,
    goes on in its bar), on the console Prefect's logs go to, so a log line lands above the
    bars instead of through them."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress

        self.console = console
        self.bars = RichProgress(
            SpinnerColumn(finished_text="[green]done"),
            TextColumn("{task.description:<16}"),
            BarColumn(),  # pulses while the total is unknown
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Bars:
        # Prefect's console has only Prefect's log styles (a Theme that does not inherit
        # rich's defaults): lend it the bars' own, for as long as they are drawn.
        from rich.default_styles import DEFAULT_STYLES
        from rich.theme import Theme

        styles = {k: v for k, v in DEFAULT_STYLES.items() if k.startswith(BAR_STYLES)}
        self.console.push_theme(Theme(styles, inherit=False))
        self.bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self.bars.stop()
        finally:
            self.console.pop_theme()

    def update(self, description: str, done: int, total: int | None) -> None:
        if description not in self._tasks:
            self._tasks[description] = self.bars.add_task(description, total=total)
        self.bars.update(self._tasks[description], completed=done, total=total)

    def finish(self, description: str, done: int) -> None:
        if description in self._tasks:
            self.bars.update(self._tasks[description], completed=done, total=done)


class Lines:
    """Plain lines where no bar can be drawn (a pipe, a log file): one per phase every
    `every` seconds at most, and one when it ends."""

    def __init__(self, console: Console, every: float = 10.0) -> None:
        self.console = console
        self.every = every
        self._last: dict[str, float] = {}
        self._ended: set[str] = set()

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def update(self, description: str, done: int, total: int | None) -> None:
        ended = total is not None and done >= total
        now = time.monotonic()
        last = self._last.setdefault(description, now)  # a phase's first update: its start
        if line_due(ended, last, now, self.every) and description not in self._ended:
            self._print(progress_line(description, done, total), description, ended)

    def finish(self, description: str, done: int) -> None:
        if description not in self._ended:  # a phase whose total was not known: its count
            self._print(progress_line(description, done, None), description, True)

    def _print(self, line: str, description: str, ended: bool) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)
        self._last[description] = time.monotonic()
        if ended:
            self._ended.add(description)


def line_due(ended: bool, last: float | None, now: float, every: float) -> bool:
    """Whether a plain display prints a line: at a phase's end, else every `every` seconds
    (`last`: when it last printed one for that phase, else when the phase started, so the
    first line waits `every` seconds too and a short phase prints one line, its last; None:
    no line before the end)."""
    return ended or (last is not None and now - last >= every)


def progress_line(description: str, done: int, total: int | None) -> str:
    """`Batches loaded: 12/30`, or `Records walked: 1,200` when the total is unknown."""
    return f"{description}: {done:,}/{total:,}" if total is not None else f"{description}: {done:,}"


CONSOLE_LEVEL_SETTING = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
"""Prefect's own setting for its console handler's level: when set, `terminal_view` leaves it."""


def console_level(verbose: bool, environ: Mapping[str, str]) -> int | None:
    """The level for Prefect's console handler: warnings and errors only, unless `verbose`,
    or the user chose one with Prefect's own setting (None: leave the handler as it is)."""
    if verbose or environ.get(CONSOLE_LEVEL_SETTING):
        return None
    return logging.WARNING


@contextmanager
def terminal_view(verbose: bool = False, console: Console | None = None) -> Iterator[Display]:
    """What a person at a terminal sees of the runs inside: each `Progress` as a bar (a few
    plain lines if `console` is not a terminal), and of the logs only warnings and errors,
    unless `verbose` or Prefect's PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL asks for more."""
    handlers: list[Any] = [h for h in logging.getLogger().handlers if _is_prefect_console(h)]
    # By default, the console of Prefect's console handler (stderr, with Prefect's styles).
    console = console or (handlers[0].console if handlers else Console(stderr=True))
    levels = [handler.level for handler in handlers]
    if (level := console_level(verbose, os.environ)) is not None:
        for handler in handlers:
            handler.setLevel(level)
    display: Bars | Lines = Bars(console) if console.is_terminal else Lines(console)
    token = _DISPLAY.set(display)
    try:
        with display:
            yield display
    finally:
        _DISPLAY.reset(token)
        for handler, level in zip(handlers, levels, strict=True):
            handler.setLevel(level)


def _is_prefect_console(handler: logging.Handler) -> bool:
    from prefect.logging.handlers import PrefectConsoleHandler

    return isinstance(handler, PrefectConsoleHandler)


def run_link(flow_run_id: UUID | str) -> str | None:
    """The run's page in the UI, as Prefect builds it (PREFECT_UI_URL, which follows
    PREFECT_API_URL); None where there is no UI (Prefect's ephemeral server)."""
    from prefect.utilities.urls import url_for

    return url_for("flow-run", obj_id=str(flow_run_id))
