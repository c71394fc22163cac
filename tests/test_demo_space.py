"""The demo as a Space runs it: the `tokenocr` package absent, a hub repo id loaded with transformers and the repo's
own remote code (helpers included), offline from a local hub cache."""

import json
from pathlib import Path

import pytest
from PIL import Image

from optional_deps import require_demo_dependencies

require_demo_dependencies()
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from demo_server import DemoServer  # noqa: E402
from fixture_cases import FIXTURES, Case, load_case  # noqa: E402
from hub_cache import BLOCK_TOKENOCR, add_to_hub_cache, offline_env  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent
REPO = "someone/TokenOCR-space-test"


def test_hub_repo_without_the_package(converted, tmp_path):
    folder = converted("tiny_seg", "float32")
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, REPO, folder)
    env = {k: v for k, v in offline_env(cache).items() if not k.startswith("GRADIO_")}
    page = ROOT / "demo" / "examples" / "receipt.png"
    original = str(FIXTURES / "tiny_legacy" / "checkpoint")  # a second model to choose; it needs the package
    with DemoServer(tmp_path, args=["--model", REPO, "--model", original], env=env, prelude=BLOCK_TOKENOCR) as server:
        client = Client(server.url, verbose=False, download_files=str(tmp_path / "downloads"))
        gallery, _, _, relevance, _, summary_file, status = client.predict(
            handle_file(str(page)), None, 1, "TOTAL", 0.2, REPO, api_name="/run"
        )
        with pytest.raises(AppError, match="original checkpoint; loading one needs the tokenocr package"):
            client.predict(handle_file(str(page)), None, 1, "TOTAL", 0.2, original, api_name="/run")
        choices = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/run"]["parameters"][5]
        assert server.refused_connections() == []
        log = server.log_tail()
    _, processor = load_case(Case("tiny_seg"))
    expected_ids = processor(text="TOTAL")["input_ids"]
    summary = json.loads(Path(summary_file).read_text())
    assert [t["token_id"] for t in summary["tokens"]] == expected_ids
    pictured = [t for t in summary["tokens"] if t["token"].strip()]  # whitespace tokens are not pictured
    assert len(gallery) == len(pictured) + 1 <= len(expected_ids) + 1  # the query's picture, then one per token
    for item in gallery:
        with Image.open(item["image"]) as heatmap:
            assert heatmap.size == (448, 896)
    assert REPO in status and "not trained" not in status
    assert choices["python_type"]["type"] == f"Literal['{REPO}', '{original}']"  # the model choice
    assert "tokenocr is not installed here" not in log  # nothing tried to import the package
