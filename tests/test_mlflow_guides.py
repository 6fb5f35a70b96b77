"""The MLflow guides say what mmp does today: the package count system-check prints, the Korean guide's word
for a run, and the section for users coming from MMP 1.x. (Their commands are checked by test_docs.py.)"""

from __future__ import annotations

import re

from conftest import REPO
from mmp.tracking.system_check import requirement_lines

GUIDES = [REPO / "docs" / "mlflow.md", REPO / "docs" / "mlflow.ko.md"]


def test_system_check_example_counts_the_packages_setup_cfg_lists() -> None:
    for guide in GUIDES:
        counts = re.findall(r"OK +packages +(\d+) required packages", guide.read_text(encoding="utf-8"))
        assert counts == [str(len(requirement_lines()))], f"{guide.name}: update the system-check example"


def test_the_korean_guide_says_run_as_reon() -> None:
    text = GUIDES[1].read_text(encoding="utf-8")
    assert "런(run)" in text and text.count("런") >= 40
    # 실행 stays the verb (실행하다, 실행 중); as the noun "run" it clashes with it.
    before = "train|prepare|explain|MLflow|모든|각|첫|내|같은|다른|예전|임시|그"
    noun = re.compile(rf"(?:{before}) 실행(?![하한할된중])|실행 ID|실행\(run\)")
    assert not noun.findall(text)


def test_both_guides_explain_coming_from_mmp_1x() -> None:
    for guide, heading in zip(GUIDES, ("## 10. Coming from MMP 1.x", "## 10. MMP 1.x에서 옮겨 오기"), strict=True):
        text = guide.read_text(encoding="utf-8")
        assert heading in text
        section = text.split(heading, 1)[1]
        for needle in (
            "tracking_uri: ./mlruns",
            "mmp migrate-store -c configs/old.yaml",
            "MLFLOW_TRACKING_URI",
            "mmp promote",
        ):
            assert needle in section, (guide.name, needle)
