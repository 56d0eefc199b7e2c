"""clustercore-iallocator against the real hail on random clusters and requests.

Each example builds a cluster and a request (``tests/ganeti_diff.py``), runs the installed
hail and ours on the same file with the same options and asserts the same success, the
same failure text (with its counts) and the same nodes or nodes whose cluster score, as
hinfo computes it, ties hail's. ``CLUSTERCORE_DIFF_EXAMPLES`` sets the number of examples
(300 by default, about 20 s; 20,000 by hand).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.ganeti_diff import HAIL, KINDS, compare, flags, requests

EXAMPLES = int(os.environ.get("CLUSTERCORE_DIFF_EXAMPLES", "300"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAIL.exists(), reason="hail is not installed")]
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(requests(KINDS), flags())
def test_every_request_type_answers_as_hail(data: dict[str, Any], flags: tuple[str, ...]) -> None:
    assert compare(data, flags) is None
