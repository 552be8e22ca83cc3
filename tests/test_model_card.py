"""Every script and stored output the SALMONN-mini model card cites exists in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "src" / "salmonn" / "assets" / "mini" / "README.md"
CITED = re.compile(r"`([^`\s/~][^`\s]*(?:\.json|\.py|\.sh|/))`")  # a backticked repo file or folder, not a command
SEARCHED = ("scripts/mini", "src/salmonn", "docs", "tests")  # where a bare name may live


def resolves(name: str) -> bool:
    pattern = name.rstrip("/")
    return any(ROOT.glob(pattern)) or any(any((ROOT / folder).glob(f"**/{pattern}")) for folder in SEARCHED)


def test_every_cited_file_exists():
    cited = sorted(set(CITED.findall(CARD.read_text())))
    assert len(cited) > 20, "the card cites its scripts and outputs in backticks"
    assert [name for name in cited if not resolves(name)] == []


def test_a_missing_file_is_caught():
    assert not resolves("stage0_ctc_wer_never_written.json")
    assert not resolves("scripts/mini/no_such_script.py")
