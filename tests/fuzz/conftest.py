"""Fuzz session: print each family's counts (inputs tried, bad, answered, crashes, bad trades) at the end."""
from __future__ import annotations

import pytest

from tests.fuzz import TALLY, summary_lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The table of counts, when any fuzz family ran in this session."""
    if not any(c.tried for c in TALLY.values()):
        return
    terminalreporter.section("fuzz counts")
    for line in summary_lines():
        terminalreporter.write_line(line)
