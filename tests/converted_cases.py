"""Fixture checkpoints converted once per test session (a conversion takes a while), for the tests that need a
converted folder as a hub user would get it."""

from pathlib import Path

from fixture_cases import FIXTURES


REPO_ID = "someone/TokenOCR"
_converted: dict = {}


def converted_folder(case_name: str, tmp_path_factory) -> Path:
    """`tokenocr-convert --input <fixture checkpoint> --output ... --dtype float32 --repo-id someone/TokenOCR`."""
    if case_name not in _converted:
        from tokenocr.conversion.convert import convert

        output = tmp_path_factory.mktemp("converted-folders") / case_name
        convert(str(FIXTURES / case_name / "checkpoint"), str(output), dtype="float32", repo_id=REPO_ID)
        _converted[case_name] = output
    return _converted[case_name]
