"""toolkit/terminal.py: progress bars on a terminal, a few plain lines elsewhere, quiet logs.

The displays draw on real rich consoles writing to a buffer (a terminal one and a plain one);
one test runs a real flow on the session's Prefect server under the view.
"""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest
from rich.console import Console

from toolkit import terminal
from toolkit.report import Progress
from toolkit.terminal import (
    CONSOLE_LEVEL_SETTING,
    console_level,
    current_display,
    line_due,
    progress_line,
    run_link,
    terminal_view,
)


def plain() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=100), buffer


def test_a_plain_line_at_a_phases_end_and_at_most_every_interval() -> None:
    assert line_due(ended=True, last=None, now=0.0, every=10.0)
    assert not line_due(ended=False, last=None, now=100.0, every=10.0)  # a short phase: 1 line
    assert not line_due(ended=False, last=5.0, now=14.0, every=10.0)
    assert line_due(ended=False, last=5.0, now=15.0, every=10.0)


def test_a_line_counts_against_the_total_when_there_is_one() -> None:
    assert progress_line("Batches loaded", 12, 30) == "Batches loaded: 12/30"
    assert progress_line("Records walked", 1200, None) == "Records walked: 1,200"


def test_logs_are_quiet_unless_asked() -> None:
    assert console_level(verbose=False, environ={}) == logging.WARNING
    assert console_level(verbose=True, environ={}) is None
    assert console_level(verbose=False, environ={CONSOLE_LEVEL_SETTING: "INFO"}) is None


def test_off_a_terminal_each_phase_ends_in_one_line() -> None:
    console, buffer = plain()
    with terminal_view(console=console) as display:
        for done in range(1, 31):
            display.update("Batches loaded", done, 30)
        for done in range(100, 3001, 100):
            display.update("Records walked", done, None)
        display.finish("Records walked", 3000)
        display.finish("Batches loaded", 30)  # already ended: no second line

    assert buffer.getvalue().splitlines() == ["Batches loaded: 30/30", "Records walked: 3,000"]


def test_off_a_terminal_a_long_phase_prints_a_line_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr(terminal, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    console, buffer = plain()
    display = terminal.Lines(console, every=10.0)
    for second in range(26):  # an update a second from the phase's start
        clock[0] = float(second)
        display.update("Records walked", 100 * (second + 1), None)
    display.finish("Records walked", 2600)

    assert buffer.getvalue().splitlines() == [
        "Records walked: 1,100",  # 10 s after the start
        "Records walked: 2,100",  # 10 s after that line
        "Records walked: 2,600",
    ]


def test_on_a_terminal_each_phase_gets_a_bar() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100)
    with terminal_view(console=console) as display:
        display.update("Records walked", 2000, None)
        display.finish("Records walked", 2000)
        display.update("Batches loaded", 20, 20)

    shown = buffer.getvalue()
    assert "Records walked" in shown and "2000/2000" in shown
    assert "Batches loaded" in shown and "20/20" in shown


def test_bars_draw_on_a_console_with_prefects_theme_alone() -> None:
    from rich.errors import MissingStyle
    from rich.theme import Theme

    # Prefect's console handler builds its Console with Theme(styles, inherit=False).
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, theme=Theme({}, inherit=False))
    with terminal_view(console=console) as display:
        display.update("Batches loaded", 3, 3)
        console.print("a log line, printed above the bars")  # renders the bars too

    assert "a log line" in buffer.getvalue() and "3/3" in buffer.getvalue()
    with pytest.raises(MissingStyle):  # the bars' styles were lent for the view only
        console.get_style("bar.back")


def test_a_failing_display_does_not_fail_the_run() -> None:
    class Broken:
        def __enter__(self) -> Broken:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def update(self, description: str, done: int, total: int | None) -> None:
            raise RuntimeError("the terminal went away")

        def finish(self, description: str, done: int) -> None:
            raise RuntimeError("the terminal went away")

    token = terminal._DISPLAY.set(Broken())
    try:
        progress = Progress(None, "Records walked")
        progress.update(10)  # no exception
        progress.finish()
    finally:
        terminal._DISPLAY.reset(token)


def test_the_view_quiets_prefects_console_handler_and_gives_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    monkeypatch.delenv(CONSOLE_LEVEL_SETTING, raising=False)
    handler = PrefectConsoleHandler(stream=io.StringIO(), level=logging.NOTSET)
    logging.getLogger().addHandler(handler)
    try:
        with terminal_view(console=plain()[0]):
            assert handler.level == logging.WARNING
        assert handler.level == logging.NOTSET
        with terminal_view(verbose=True, console=plain()[0]):
            assert handler.level == logging.NOTSET
    finally:
        logging.getLogger().removeHandler(handler)


def test_progress_outside_a_view_shows_nothing() -> None:
    assert current_display() is None
    Progress(None, "Records walked").update(10)  # no display, no artifact: nothing happens


def test_a_flows_progress_reaches_the_view(prefect_server: str) -> None:
    from prefect import flow

    @flow
    def walk_and_load() -> None:
        walked = Progress(None, "Records walked")
        for done in range(0, 501, 100):
            walked.update(done)
        walked.finish()
        loaded = Progress(5, "Batches loaded", interval=0)
        for done in range(1, 6):
            loaded.update(done)

    console, buffer = plain()
    with terminal_view(console=console):
        walk_and_load()

    assert buffer.getvalue().splitlines() == ["Records walked: 500", "Batches loaded: 5/5"]


def test_the_link_is_the_runs_page_under_the_ui_url() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4321/api"}):
        assert run_link("0b6f") == "http://127.0.0.1:4321/runs/flow-run/0b6f"
    with temporary_settings({PREFECT_UI_URL: "https://prefect.example.com"}):
        assert run_link("0b6f") == "https://prefect.example.com/runs/flow-run/0b6f"
