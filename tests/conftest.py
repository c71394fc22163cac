"""Pytest fixtures over the reference cases (see fixture_cases.py)."""

import pytest

from fixture_cases import CASES, Case, load_case


@pytest.fixture(params=CASES, scope="session")
def case(request) -> Case:
    return Case(request.param)


@pytest.fixture(scope="session")
def loaded(case):
    return load_case(case)
