"""What the CLI prints: tables never cut an id, however narrow the terminal."""

from __future__ import annotations

import zoo.api
from zoo.cli import main


def test_a_narrow_terminal_never_cuts_ids_or_file_names(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "40")
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for entry in zoo.api.all_entries():
        assert entry.id in out and entry.file in out, entry.id


def test_a_title_longer_than_its_table_stays_on_one_line(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["list", "boards"]) == 0
    assert "leaderboards" in capsys.readouterr().out.splitlines()[0]
