"""Small promises a new user meets first: option names and defaults shown, valid JSON, clear refusals."""

import json
import math
from pathlib import Path

import pytest

from tokenocr.cli import build_parser, main
from tokenocr.outputs import json_ready


ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC_MODEL = str(ROOT / "models" / "tokenocr-tiny-synthetic")
SYNTHETIC_PAGE = str(ROOT / "demo" / "examples" / "synthetic_page.png")


def test_non_finite_numbers_become_null_so_json_stays_valid():
    value = {"relevance": math.nan, "boxes": [[1, 2, 3, 4]], "tokens": [{"score": math.inf}, {"score": -0.5}]}
    text = json.dumps(json_ready(value), allow_nan=False)
    assert json.loads(text) == {"relevance": None, "boxes": [[1, 2, 3, 4]], "tokens": [{"score": None}, {"score": -0.5}]}


def test_both_commands_take_image_and_images_and_show_their_defaults():
    parser = build_parser()
    common = ["--model", "m", "--query", "q", "--out", "o"]
    assert parser.parse_args(["similarity", "--images", "a.png", "b.png", *common]).image == ["a.png", "b.png"]
    assert parser.parse_args(["search", "--image", "a.png", *common]).images == ["a.png"]
    similarity_help = parser._subparsers._group_actions[0].choices["similarity"].format_help()
    assert "(default: 150)" in similarity_help and "--max-tiles N" in similarity_help
    with pytest.raises(SystemExit):
        parser.parse_args(["similarity", "--image", "a.png", "--dpi", "5000", *common])


def test_return_visuals_must_be_a_boolean():
    from tokenocr.loading import load_pipeline

    finder = load_pipeline(SYNTHETIC_MODEL)
    with pytest.raises(TypeError, match="return_visuals"):
        finder(SYNTHETIC_PAGE, "Bank", return_visuals="no")


def test_an_empty_json_name_is_refused(capsys):
    assert main(["evaluate", "--model", SYNTHETIC_MODEL, "--data", str(ROOT), "--json", ""]) == 1
    assert capsys.readouterr().err.strip() == "tokenocr: error: --json needs a file name (got an empty one)"


def test_a_resumed_search_with_nothing_left_says_so_before_loading_the_model(tmp_path, capsys):
    out = tmp_path / "hits.jsonl"
    arguments = ["search", "--model", SYNTHETIC_MODEL, "--images", SYNTHETIC_PAGE, "--query", "Bank", "--out", str(out)]
    assert main(arguments) == 0
    line = json.loads(out.read_text().splitlines()[0])
    assert line["query"] == "Bank" and len(line["box"]) == 4 and line["box_score"] <= line["relevance"] + 1e-6
    capsys.readouterr()
    assert main([*arguments, "--resume"]) == 0
    assert "nothing to do: all 1 pages were scored already" in capsys.readouterr().err


def test_a_pdf_page_past_the_end_is_refused_before_torch_is_imported(tmp_path):
    import subprocess
    import sys

    from test_make_data import LINES, write_pdf

    pdf = write_pdf(tmp_path / "two.pdf", [{"lines": LINES}, {"lines": LINES}])
    script = (
        "import sys\nfrom tokenocr.cli import main\n"
        f"code = main(['similarity', '--model', 'm', '--image', {str(pdf)!r}, '--pages', '2-3', '--query', 'x', "
        "'--out', 'o'])\n"
        "print(code, sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "1 []", result.stderr
    assert "has 2 pages; pages 2-3 were asked for" in result.stderr and result.stderr.count("\n") == 1
