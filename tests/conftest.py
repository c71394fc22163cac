"""Pytest fixtures over the reference cases (see fixture_cases.py), and converted folders shared by the session."""

import pytest

from fixture_cases import CASES, FIXTURES, Case, load_case


def pytest_addoption(parser):
    parser.addoption("--skip-slow", action="store_true",
                     help="skip the long end-to-end checks marked `slow` (CI runs them; handy locally)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long end-to-end check (subprocesses, signals); --skip-slow skips it")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--skip-slow"):
        skip = pytest.mark.skip(reason="--skip-slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(params=CASES, scope="session")
def case(request) -> Case:
    return Case(request.param)


@pytest.fixture(scope="session")
def loaded(case):
    return load_case(case)


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """`converted(case_name, dtype=None)`: that fixture checkpoint converted once per session (do not modify it)."""
    from tokenocr.cli import convert_main

    folders = {}

    def get(case_name: str, dtype: str | None = None):
        if (case_name, dtype) not in folders:
            output = tmp_path_factory.mktemp("converted") / f"{case_name}-{dtype or 'default'}"
            arguments = ["--input", str(FIXTURES / case_name / "checkpoint"), "--output", str(output)]
            assert convert_main(arguments + (["--dtype", dtype] if dtype else [])) == 0
            folders[case_name, dtype] = output
        return folders[case_name, dtype]

    return get
