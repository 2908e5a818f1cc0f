"""Worker failures are reported with the item they were working on."""

from __future__ import annotations

import os
import re

import pytest

from uadnet.utilities.parallel import WorkerError, parallel_map


def square_or_fail(x: int) -> int:
    if x == 3:
        raise ValueError("bad value")
    if x == 4:
        os._exit(1)  # a worker that dies (as when the OOM killer strikes)
    return x * x


def test_results_keep_order():
    assert parallel_map(square_or_fail, [0, 1, 2], 2, "square", disable_progress_bar=True) == [0, 1, 4]
    assert parallel_map(square_or_fail, [2, 1], 1, "square", disable_progress_bar=True) == [4, 1]


@pytest.mark.parametrize("num_processes", [1, 2])
def test_exception_names_the_item(num_processes):
    with pytest.raises(WorkerError, match="square failed on case_3: bad value"):
        parallel_map(square_or_fail, [1, 3], num_processes, "square", names=["case_1", "case_3"],
                     disable_progress_bar=True)


def test_dead_worker_is_a_clear_error():
    items = [1, 4, 5, 6, 7, 8]
    with pytest.raises(WorkerError, match=r"died while processing .*case_4.*-np 1") as info:
        parallel_map(square_or_fail, items, 2, "square", names=[f"case_{i}" for i in items], disable_progress_bar=True)
    # only the items the two workers could have held are named: case_4 and at most one other (which one depends on
    # how many items the surviving worker finished before the death was noticed: timing, not a defect)
    held = re.search(r"died while processing (.*?) \(", str(info.value)).group(1).split(" or ")
    assert "case_4" in held and len(held) <= 2, held
