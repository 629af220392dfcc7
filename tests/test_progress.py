"""The one progress adapter: `progress(fraction, message)` calls drive a tqdm bar, closed however the block ends."""

import re
from pathlib import Path

import pytest

from workbench import progress as progress_module
from workbench.progress import DESCRIPTION_WIDTH, progress_bar

ROOT = Path(__file__).resolve().parent.parent


class FakeBar:
    """Records what the adapter does to its tqdm bar."""

    made: list["FakeBar"] = []

    def __init__(self, total, initial, desc, unit, disable):
        self.total, self.n, self.desc, self.unit, self.disable = total, initial, desc, unit, disable
        self.closed = False
        FakeBar.made.append(self)

    def set_description(self, desc):
        self.desc = desc

    def update(self, k):
        assert k >= 0
        self.n += k

    def close(self):
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    import tqdm.auto

    FakeBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    return FakeBar.made


def test_drives_the_bar_to_completion(bars):
    with progress_bar("loading") as report:
        report(0.25, "a quarter")
        report(0.5, "")  # no message: the description stays
        assert (bars[0].n, bars[0].desc, bars[0].closed) == (50, "a quarter", False)
        report(1.0, "done")
    bar = bars[0]
    assert (bar.total, bar.n, bar.desc, bar.unit, bar.closed) == (100, 100, "done", "%", True)


def test_closes_on_error(bars):
    with pytest.raises(RuntimeError, match="boom"):
        with progress_bar("work") as report:
            report(0.3, "working")
            raise RuntimeError("boom")
    assert bars[0].closed and bars[0].n == 30


def test_step_bar_resumes_and_never_goes_back(bars):
    with progress_bar("run", total=7, initial=3, unit="step", disable=True) as report:
        report(3 / 7, "")  # 3/7 * 7 is 2.999...: rounded, not truncated
        assert bars[0].n == 3
        report(5 / 7, "x" * 200)
        report(4 / 7, "")  # a late, smaller fraction leaves the bar where it is
    bar = bars[0]
    assert (bar.n, bar.disable, bar.closed) == (5, True, True)
    assert len(bar.desc) == DESCRIPTION_WIDTH


def test_real_tqdm_bar_reaches_100_percent(capsys):
    with progress_bar("real") as report:
        report(1.0, "finished")
    err = capsys.readouterr().err
    assert "finished" in err and "100%" in err


def _sources():
    for package in ("workbench", "probes", "trainers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text(encoding="utf-8")


def test_one_alias_and_one_adapter():
    """No module defines its own Progress alias or drives tqdm itself."""
    own = Path(progress_module.__file__).resolve()
    for path, text in _sources():
        if path.resolve() == own:
            continue
        assert not re.search(r"^Progress\s*=", text, re.M), f"{path} defines its own Progress alias"
        assert not re.search(r"^\s*(from tqdm|import tqdm)", text, re.M), f"{path} drives tqdm itself"
