"""The README's quick-start example runs end to end and reports the original's best similarities."""

import runpy
import sys
from pathlib import Path

from fixture_cases import Case


def test_quick_start_example(capsys, monkeypatch):
    case = Case("tiny_seg")
    script = Path(__file__).parents[1] / "examples" / "quick_start.py"
    query = "they are not"
    monkeypatch.setattr(sys, "argv", [str(script), str(case.checkpoint), str(case.image_path("doc_wide.png")), query])
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.strip().splitlines()
    expected = case.expected("doc_wide.png")[f"similarity_q{case.queries.index(query)}"]
    assert lines[0].startswith("grid [5, 2]")
    assert len(lines) == 1 + len(expected)
    for line, token_map in zip(lines[1:], expected):
        assert f"best similarity {token_map.max():+.4f}" in line
