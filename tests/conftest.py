"""Shared pytest set-up: the --runslow switch and the path to the real Upworthy file."""
import os
import pathlib

# The estimator's many small factorisations: OpenBLAS threads busy-wait against XLA's on
# small machines (a 150-row cross-fit took 8 s instead of 0.14 s on 2 cores). Must be set
# before numpy is first imported; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
UPWORTHY = pathlib.Path(os.environ.get(
    "DLM_UPWORTHY", REPO.parent / "shared/data/upworthy/upworthy_exploratory_dev.csv.gz"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run @slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def upworthy_path() -> pathlib.Path:
    if not UPWORTHY.exists():
        pytest.skip(f"real Upworthy file not found at {UPWORTHY} (set DLM_UPWORTHY to its path)")
    return UPWORTHY
