"""Command-line inputs checked before any model loads (--dpi, --batch-size, queries that are not text), and query
tokens shown as the query's own characters (byte-level and byte-fallback tokenizers cut '€' into bytes)."""

from pathlib import Path

import pytest

from tokenocr.cli import main


REPOSITORY = Path(__file__).resolve().parent.parent
MODELS = sorted((REPOSITORY / "models").glob("tokenocr-tiny-*"))
NO_MODEL = "nobody/no-such-model"  # never loaded: every mistake below is found first


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tokenocr: error: ")
    return lines[0]


def command(name: str, tmp_path, *extra) -> list[str]:
    if name == "evaluate":
        return ["evaluate", "--model", NO_MODEL, "--data", str(tmp_path / "data"), *extra]
    if name == "make-data":
        return ["make-data", str(tmp_path / "a.pdf"), "--model", NO_MODEL, "--output", str(tmp_path / "out"), *extra]
    inputs = ["--image", str(tmp_path / "a.png")] if name == "similarity" else ["--images", str(tmp_path)]
    out = str(tmp_path / ("out" if name == "similarity" else "out.jsonl"))
    return [name, "--model", NO_MODEL, *inputs, "--query", "x", "--out", out, *extra]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a model fails the test (the checks must come first)."""
    import tokenocr.loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(tokenocr.loading, "load_pipeline", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", ["similarity", "search", "make-data"])
@pytest.mark.parametrize("dpi", ["0", "-72", "17", "1201", "1e9", "nan", "inf", "150.5", "abc", "9" * 30])
def test_dpi_is_checked_while_parsing(tmp_path, capsys, no_model_loads, name, dpi):
    with pytest.raises(SystemExit) as exit_info:
        main(command(name, tmp_path, "--dpi", dpi))
    assert exit_info.value.code == 2
    line = error_line(capsys)
    assert "--dpi" in line and "between 18 and 1200 dpi" in line, line


@pytest.mark.parametrize("name", ["similarity", "search", "evaluate"])
@pytest.mark.parametrize("size", ["0", "1025", "1000000000", "nan", "-1"])
def test_batch_size_has_an_upper_bound_checked_while_parsing(tmp_path, capsys, no_model_loads, name, size):
    from tokenocr.processing.settings_tokenocr import MAX_BATCH_SIZE

    assert MAX_BATCH_SIZE == 1024
    with pytest.raises(SystemExit) as exit_info:
        main(command(name, tmp_path, "--batch-size", size))
    assert exit_info.value.code == 2
    line = error_line(capsys)
    assert "--batch-size" in line, line
    if size.isdigit() and int(size) > 0:
        assert f"at most {MAX_BATCH_SIZE}" in line, line


def test_the_bounds_themselves_are_accepted():
    from tokenocr.cli import build_parser

    for name in ("similarity", "search"):
        args = build_parser().parse_args(command(name, Path("t"), "--dpi", "18", "--batch-size", "1024"))
        assert (args.dpi, args.batch_size) == (18, 1024)
        args = build_parser().parse_args(command(name, Path("t"), "--dpi", "1200", "--batch-size", "1"))
        assert (args.dpi, args.batch_size) == (1200, 1)
    assert build_parser().parse_args(command("make-data", Path("t"), "--dpi", "1200")).dpi == 1200


@pytest.mark.parametrize("name", ["similarity", "search"])
def test_a_query_with_a_lone_surrogate_is_refused_naming_its_position(tmp_path, capsys, no_model_loads, name):
    from PIL import Image

    Image.new("RGB", (40, 30), "white").save(tmp_path / "a.png")
    argv = command(name, tmp_path)
    at = argv.index("--query") + 1
    argv[at:at + 1] = ["Total", "caf\udce9"]  # 'café' in Latin-1 bytes, read by a UTF-8 command line
    assert main(argv) == 1
    line = error_line(capsys)
    assert "Query 2" in line and "\\udce9" in line and "surrogate" in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.jsonl").exists()


def test_check_queries_refuses_every_lone_surrogate_and_keeps_real_text():
    from tokenocr.processing.settings_tokenocr import check_queries

    for queries, position in ((["\ud800"], 1), (["ok", "a\udfffb"], 2), (["a", "b", "\udc80"], 3)):
        with pytest.raises(ValueError, match=f"Query {position} "):
            check_queries(queries)
    assert check_queries(["5 €", "Straße", "\U0001f600 中文"]) == ["5 €", "Straße", "\U0001f600 中文"]


# --------------------------------------------------------------------------------------------------------------------
# Query tokens as the query's own characters
# --------------------------------------------------------------------------------------------------------------------


def _processor(tokenizer):
    from tokenocr.processing.image_processing_tokenocr import TokenOCRImageProcessor
    from tokenocr.processing.processing_tokenocr import TokenOCRProcessor

    return TokenOCRProcessor(TokenOCRImageProcessor(), tokenizer)


def _byte_level_tokenizer(merges=()):
    """A byte-level BPE (GPT-2 style): every byte its own token, plus `merges`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {character: index for index, character in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for first, second in merges:
        vocab[first + second] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, list(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def _byte_fallback_tokenizer():
    """The SentencePiece-style BPE with byte fallback that `tokenocr train` makes (test_make_data's)."""
    from tokenocr.training.tokenizer import BYTE_FALLBACK_LAYOUT, train_tokenizer

    return train_tokenizer(["Invoice account balance due date Total"] * 20, vocab_size=BYTE_FALLBACK_LAYOUT + 40)


@pytest.mark.parametrize("kind", ["byte-level", "byte-level-merged", "byte-fallback"])
@pytest.mark.parametrize("with_query", [True, False])
def test_query_tokens_show_characters_cut_into_bytes_whole(kind, with_query):
    # 'Ĥ¬' holds the last two bytes of '€' (E2 82 AC), 'ĠÃ' a space and the first byte of 'ß' (C3 9F)
    tokenizer = {"byte-level": _byte_level_tokenizer, "byte-fallback": _byte_fallback_tokenizer,
                 "byte-level-merged": lambda: _byte_level_tokenizer([("Ĥ", "¬"), ("Ġ", "Ã")])}[kind]()
    processor = _processor(tokenizer)
    for query in ("5 € ß", "€", "Preis: 5€", "ß"):
        ids = processor(text=query)["input_ids"]
        assert any("\ufffd" in tokenizer.decode([token_id]) for token_id in ids)  # the case at hand
        tokens = processor.query_tokens(ids, query if with_query else None)
        assert len(tokens) == len(ids)
        assert not any("\ufffd" in token for token in tokens), (query, tokens)
        assert "".join(tokens).strip() == query.strip(), (query, tokens)
        assert "€" in tokens or "€" not in query  # the token that completes it shows it whole
        assert any(token.strip() == "ß" for token in tokens) or "ß" not in query
    # Tokens of whole characters show as the original shows them (decode of the id alone).
    ids = processor(text="Total due")["input_ids"]
    assert processor.query_tokens(ids, "Total due") == [tokenizer.decode([token_id]) for token_id in ids]


def test_query_tokens_use_the_offsets_of_a_fast_tokenizer(monkeypatch):
    processor = _processor(_byte_level_tokenizer([("Ĥ", "¬")]))
    ids = processor(text="a€b")["input_ids"]
    monkeypatch.setattr(type(processor), "_texts_from_runs", lambda *args: pytest.fail("offsets were not used"))
    assert processor.query_tokens(ids, "a€b") == [" ", "a", "", "€", "b"]
    # ids that are not this query's: the offsets do not apply, the fallback decodes the run together
    monkeypatch.undo()
    assert processor.query_tokens(ids, "something else") == [" ", "a", "", "€", "b"]
    assert processor.query_tokens(ids[2:]) == ["", "€", "b"]  # without the query


def test_a_query_of_user_typed_replacement_characters_is_kept():
    processor = _processor(_byte_level_tokenizer())
    ids = processor(text="\ufffd")["input_ids"]
    assert processor.query_tokens(ids, "\ufffd")[-1] == "\ufffd"
    assert processor.query_tokens(ids)[-1] == "\ufffd"


@pytest.mark.parametrize("folder", MODELS, ids=[folder.name for folder in MODELS])
def test_the_repository_models_show_non_ascii_tokens_and_name_their_files_readably(folder):
    from transformers import AutoTokenizer

    from tokenocr.commands.similarity import safe_name

    processor = _processor(AutoTokenizer.from_pretrained(folder))
    for query in ("5 €", "Straße"):
        ids = processor(text=query)["input_ids"]
        tokens = processor.query_tokens(ids, query)
        assert "".join(tokens).strip() == query and not any("\ufffd" in token for token in tokens), tokens
        assert [token for token in tokens if not token.isascii()] == [c for c in query if not c.isascii()]
        assert [safe_name(token) for token in tokens if not token.isascii()] == [c for c in query if not c.isascii()]


def test_safe_names_keep_letters_and_symbols_beyond_ascii_readable():
    from tokenocr.commands.similarity import display_name, safe_name

    assert safe_name("€") == "€" and safe_name(" ß") == "ß" and safe_name("Straße 5€") == "Straße_5€"
    assert safe_name("中文") == "中文" and safe_name("é") == "é"
    # what a file name must not hold, or a shell reads specially, still becomes '_' or the code points
    assert safe_name("a/b") == "a_b" and safe_name("a:b?c") == "a_b_c" and safe_name("a\u202eb") == "a_b"
    assert safe_name(" ") == "U0020" and safe_name("/") == "U002F" and safe_name("$") == "U0024"
    assert safe_name("\ufffd") == "UFFFD" and safe_name("\u00a0") == "U00A0" and safe_name("x\x1b[31m") == "x_31m"
    assert len(safe_name("€" * 100)) == 40
    # a surrogate that is no file-name byte never breaks a name or a summary
    assert display_name("\ud800a") == "\ufffda" and safe_name("\ud800a") == "a"


def test_the_command_line_and_the_demo_choose_the_same_default_device(monkeypatch):
    import importlib.util

    import torch

    from tokenocr.loading import check_device

    spec = importlib.util.spec_from_file_location(
        "tokenocr_demo_scoring_for_devices", Path(__file__).resolve().parent.parent / "demo" / "scoring.py")
    for available, expected in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda available=available: available)
        demo_scoring = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(demo_scoring)
        assert check_device(None) == demo_scoring.check_device(None) == expected
