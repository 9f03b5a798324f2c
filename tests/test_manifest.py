"""A manifest's commit: HEAD of the checkout the package runs from, and whether the named code differs from it."""
import re

from tardiff.utils import git_state


def test_the_commit_is_this_checkouts_head():
    commit, dirty = git_state(("tardiff",))
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and isinstance(dirty, bool)


def test_without_git_the_commit_is_empty_not_an_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert git_state() == ("", False)
