"""Fuzzed inputs with counts: every family tallies what it tried and how each bad input was answered.

The tally is printed at the end of the session (tests/fuzz/conftest.py) and copied into docs/reliability.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class FamilyCount:
    """What one fuzz family tried and how keel answered."""

    tried: int = 0  # inputs tried (an input is a tick, a frame, a file, a config text or a payload)
    bad: int = 0  # inputs that are wrong by construction
    answered: int = 0  # bad inputs answered with a clear error or a counted drop (must equal `bad`)
    crashes: int = 0  # any other exception (must be 0)
    bad_trades: int = 0  # decisions taken on a rejected value (must be 0)
    notes: dict[str, int] = field(default_factory=dict)  # family-specific counts worth reporting

    def note(self, what: str, n: int = 1) -> None:
        """Add `n` to a family-specific count."""
        self.notes[what] = self.notes.get(what, 0) + n


TALLY: dict[str, FamilyCount] = {}
FAMILIES = ("ticks", "frames", "files", "config", "mqtt")


def family(name: str) -> FamilyCount:
    """The running count of one family."""
    return TALLY.setdefault(name, FamilyCount())


def summary_lines() -> list[str]:
    """The tally as a Markdown table (the rows docs/reliability.md shows)."""
    lines = [
        "| family | inputs tried | bad inputs | answered (error or counted drop) | crashes | trades on a rejected value |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in sorted(TALLY, key=lambda n: (FAMILIES.index(n) if n in FAMILIES else len(FAMILIES), n)):
        c = TALLY[name]
        lines.append(f"| {name} | {c.tried:,} | {c.bad:,} | {c.answered:,} | {c.crashes} | {c.bad_trades} |")
    for name, c in TALLY.items():
        if c.notes:
            lines.append(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c.notes.items())))
    return lines
