"""The runner's live line: loops report to a status file only when the runner names one."""

import time

from recnb import progress


def test_reports_are_no_ops_without_the_runner(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.report("SFT step 1/70", force=True)
    for _ in progress.bar(range(3), disable=True):
        pass
    with progress.bar(total=3, disable=True) as bar:  # a disabled bar updated by hand (tqdm sets up no postfix)
        bar.update(2)
    assert list(tmp_path.iterdir()) == []


def test_a_bar_reports_its_position_and_the_watcher_shows_each_new_line(tmp_path, monkeypatch):
    status = tmp_path / "04_sft_unsloth.progress"
    monkeypatch.setenv(progress.ENV, str(status))
    seen = []
    stop = progress.watch(status, seen.append, every_s=0.05)
    for _ in progress.bar(range(4), desc="generate", mininterval=0):
        pass
    time.sleep(0.3)
    stop()
    assert status.read_text() == "generate 4/4"  # the last step is always written, whatever the throttle
    assert seen and seen[-1] == "generate 4/4"
    progress.report("SFT  step 2/70\n loss 1.5", force=True)
    assert status.read_text() == "SFT step 2/70 loss 1.5"  # one line, whitespace collapsed
    assert not (tmp_path / "04_sft_unsloth.progress.tmp").exists()


def test_under_the_runner_bars_are_text_so_a_saved_notebook_keeps_their_last_line(monkeypatch, tmp_path):
    from tqdm.std import tqdm as text_bar

    monkeypatch.setenv(progress.ENV, str(tmp_path / "s"))
    under_runner = progress.bar(range(2), disable=True)
    monkeypatch.delenv(progress.ENV)
    by_hand = progress.bar(range(2), disable=True)
    assert type(under_runner).__mro__[1:3] == (progress._Reporting, text_bar)
    assert isinstance(by_hand, progress._AutoBar)
