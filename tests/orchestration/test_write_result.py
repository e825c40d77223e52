"""A result file is written whole or not at all: a writer that dies mid-way leaves the previous one."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestration.runtime.storage import write_result


def test_a_write_cut_short_leaves_the_previous_table_not_a_cut_one(tmp_path: Path, monkeypatch):
    table = write_result(tmp_path / "table5.md", "# Table 5\n| MGN | 95.7 |\n")
    assert table.read_text() == "# Table 5\n| MGN | 95.7 |\n"

    def killed(self: Path, data: bytes) -> int:  # the process dies after half the bytes
        with self.open("wb") as stream:
            stream.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        write_result(table, "# Table 5\n| MGN | 96.0 |\n" * 100)
    monkeypatch.undo()
    assert table.read_text() == "# Table 5\n| MGN | 95.7 |\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table5.md"]  # no temporary file left either
