"""The README and docs/ stay true to the code: the Python example runs, the leaderboard summary covers every
board, and every relative link points at a file in the repository."""

import re
from pathlib import Path

import pytest

from zoo import leaderboard

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should show the backbone in Python"
    for block in blocks:
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)
        assert namespace["out"].y.shape == (4, 128, 256)
        assert namespace["loss"].requires_grad


def test_readme_summarises_every_board_once():
    text = README.read_text()
    assert text.count(leaderboard.README_START) == 1 and text.count(leaderboard.README_END) == 1
    block = text.split(leaderboard.README_START)[1].split(leaderboard.README_END)[0]
    rows = [line for line in block.splitlines() if line.startswith("| [")]
    assert [re.match(r"\| \[([^\]]+)\]", row).group(1) for row in rows] == leaderboard.board_names()


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    targets = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", doc.read_text())
    missing = [t for t in targets if "://" not in t and not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to files that do not exist: {missing}"


def test_docs_cover_architecture_kernels_data_and_tasks():
    assert {p.name for p in DOCS} >= {"architecture.md", "kernels.md", "data.md", "tasks.md"}
