"""Every chapter under the full profile (a GPU reader's opt-in), at smoke scale, on the CPU.

``RKD_PROFILE=full RKD_SMOKE=1`` keeps the full profile's networks, sizes and
code paths on a few batches and one epoch, so a shape bug in the path nobody
runs on a CPU cannot hide.
"""

import os

import pytest

from chapter_runs import CHAPTERS, ROOT, outputs_text, run_chapter


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_under_the_full_profile_at_smoke_scale(chapter, tmp_path):
    nb = run_chapter(chapter, tmp_path, {"RKD_PROFILE": "full", "RKD_SMOKE": "1", "PYTHONPATH": str(ROOT),
                                         "RKD_DATA": os.environ.get("RKD_DATA", "")})
    text = outputs_text(nb)
    if "profile:" in text:
        assert "profile: full" in text, "the chapter did not take RKD_PROFILE=full"
    assert "nan" not in text.split(), "a NaN reached the chapter's text"


