"""The aggregators on two real crowd data sets with ground truth (Zheng et al., PVLDB 2017).

Data: ``<repo>/../shared/data/crowd/{d_product,s_dog}/{answer,truth}.csv`` (override the folder
with ANNOTATE_CROWD_DATA); skipped when absent. Reference figures: crowd-kit 1.4.2 on the same
files gives Dawid–Skene 0.9397 on D_Product and 0.8426 on S_Dog, published rounded as 0.940 and
0.843; majority vote 0.897 / 0.812.
"""

from __future__ import annotations

import numpy as np
import pytest

from mltasks import datasets
from mltasks.core.answers import AnswerTable
from mltasks.core.consensus import MACE, DawidSkene, MajorityVote, OneCoinDawidSkene


@pytest.fixture(autouse=True)
def _private_media() -> None:
    """Pure-NumPy tests: override tests/conftest.py's Django media fixture (runs with -p no:django)."""


def load_crowd(name: str) -> tuple[AnswerTable, np.ndarray, np.ndarray]:
    """(table, item indices with truth, their true class indices); skips when the data is not here."""
    data = datasets.load_crowd(name)
    if data is None:
        pytest.skip(
            f"crowd data set {name!r} not found under {datasets.crowd_root()} "
            "(set ANNOTATE_CROWD_DATA to its parent folder)"
        )
    return data


# (data set, majority vote, Dawid–Skene as published by crowd-kit, floor for our defaults)
CASES = [("d_product", 0.897, 0.940, 0.939), ("s_dog", 0.812, 0.843, 0.842)]


@pytest.mark.parametrize(("name", "mv_ref", "ds_ref", "ds_floor"), CASES)
def test_dawid_skene_on_real_crowd_data(name: str, mv_ref: float, ds_ref: float, ds_floor: float) -> None:
    table, items, truth = load_crowd(name)

    def accuracy(model: MajorityVote) -> float:
        return float((model.fit(table).labels_[items] == truth).mean())

    assert round(accuracy(MajorityVote()), 3) == mv_ref
    # Without the smoothing prior our EM is crowd-kit's: same figure to the published precision.
    unsmoothed = accuracy(DawidSkene(smoothing=0.0))
    assert round(unsmoothed, 3) >= ds_ref, unsmoothed
    # The default prior (half a pseudo-answer per class at 0.7 accuracy) keeps a reader with a
    # handful of answers from being trusted blindly; here it costs at most two items.
    default = accuracy(DawidSkene())
    assert default >= ds_floor, default
    assert accuracy(OneCoinDawidSkene()) > mv_ref
    assert accuracy(MACE()) > mv_ref
