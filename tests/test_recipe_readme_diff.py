"""The README's before/after loop ("MI as a regularizer: one construction line, one loss line")
is real code: ``tests/readme_loop/plain_loop.py`` holds the "before" block, and
``with_regularizer.py`` differs from it by exactly the README's ```diff block, line for line
(the lines it adds and removes, in order, with its context lines around them); both run."""

from __future__ import annotations

import difflib
import math
import re
import runpy

import pytest
from recipe_runs import ROOT

SECTION = "## MI as a regularizer: one construction line, one loss line"
LOOP = ROOT / "tests" / "readme_loop"
PLAIN, AFTER = LOOP / "plain_loop.py", LOOP / "with_regularizer.py"


def readme_blocks(section: str = SECTION) -> dict[str, list[str]]:
    """The fenced code blocks of one README section, by language (the first of each)."""
    text = (ROOT / "README.md").read_text()
    start = text.index(section + "\n")
    end = text.find("\n## ", start + len(section))
    blocks: dict[str, list[str]] = {}
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```$", text[start:end], flags=re.S | re.M):
        blocks.setdefault(lang, body.splitlines())
    return blocks


def changed_lines(old: list[str], new: list[str]) -> list[str]:
    """What turns ``old`` into ``new``, as diff lines: '-' + a removed line, '+' + an added one."""
    changes = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag != "equal":
            changes += ["-" + line for line in old[i1:i2]] + ["+" + line for line in new[j1:j2]]
    return changes


def contains_block(lines: list[str], block: list[str]) -> bool:
    """Whether ``block`` appears in ``lines`` as consecutive lines."""
    return any(lines[i : i + len(block)] == block for i in range(len(lines) - len(block) + 1))


def without_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line)


def test_the_readme_section_has_both_blocks() -> None:
    blocks = readme_blocks()
    assert len(blocks["python"]) >= 3 and len(blocks["diff"]) >= 3
    assert all(line[:1] in " +-" for line in blocks["diff"]), blocks["diff"]


def test_scripts_differ_by_exactly_the_readme_diff() -> None:
    diff = readme_blocks()["diff"]
    plain, after = PLAIN.read_text().splitlines(), AFTER.read_text().splitlines()
    assert changed_lines(plain, after) == [line for line in diff if line[:1] in "+-"]
    # the diff's old side (context and removed lines) stands as one block in the plain script,
    # its new side (context and added lines) in the script with the regularizer
    assert contains_block(plain, [line[1:] for line in diff if line[:1] in " -"])
    assert contains_block(after, [line[1:] for line in diff if line[:1] in " +"])


def test_the_readme_before_block_is_the_plain_script() -> None:
    before = [without_comment(line) for line in readme_blocks()["python"]]
    assert contains_block(PLAIN.read_text().splitlines(), before)


def test_changed_lines_sees_a_change_the_readme_does_not_show() -> None:
    """The comparison can fail: one extra line in the script is an extra '+' line."""
    plain = PLAIN.read_text().splitlines()
    after = AFTER.read_text().splitlines()
    extra = [*after[:-1], "reg.remove()", after[-1]]
    diff = [line for line in readme_blocks()["diff"] if line[:1] in "+-"]
    assert changed_lines(plain, extra) == [*diff, "+reg.remove()"] != diff


@pytest.mark.usefixtures("single_thread")
def test_both_scripts_train_a_few_steps(capsys: pytest.CaptureFixture[str]) -> None:
    plain = runpy.run_path(str(PLAIN), run_name="__main__")
    after = runpy.run_path(str(AFTER), run_name="__main__")
    assert capsys.readouterr().out.count("last loss") == 2
    assert len(plain["loader"]) == len(after["loader"]) == 5  # five training steps each
    assert math.isfinite(plain["loss"].item()) and math.isfinite(after["loss"].item())
    assert "reg" not in plain
    mi = after["reg"].metrics()["mi"]  # the regularizer scored the last batch, in nats
    assert math.isfinite(mi)
    after["reg"].remove()
