"""aevb_fast.threads: the probe that sees torch's threads oversubscribed on a busy CPU (issue 32,
item 9), and the thread count the commands choose from it."""

import pytest
import torch

from aevb_fast import threads


@pytest.fixture(autouse=True)
def no_cgroup_quota(monkeypatch):
    """The choices below do not depend on the quota of the machine that runs the tests."""
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)


def test_probe_times_both_counts_and_restores_the_threads():
    before = torch.get_num_threads()
    result = threads.probe(repeats=3)
    assert torch.get_num_threads() == before
    assert result["threads"] == before and result["tiny_op_s"] > 0 and result["one_thread_s"] > 0
    assert threads.probe(threads=1, repeats=3)["oversubscribed"] is False  # one thread waits for no other
    assert "add took" in threads.describe(result)


def test_an_oversubscribed_cpu_gets_one_thread_and_a_notice(monkeypatch):
    before = torch.get_num_threads()
    said = []
    busy = {"threads": 4, "tiny_op_s": 8e-3, "one_thread_s": 2e-5, "oversubscribed": True}
    monkeypatch.setattr(threads, "probe", lambda n=None, repeats=15: busy)
    monkeypatch.setattr(threads, "idle_cpus", lambda window=0.25: None)  # no /proc/stat: the probe decides
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert threads.choose_threads(0, "aevb-fast train", say=said.append) == 1
    assert set_to == [1]
    assert len(said) == 1 and "using 1 thread" in said[0] and "--threads 4" in said[0] and "8 ms" in said[0]
    monkeypatch.undo()
    assert torch.get_num_threads() == before


def test_threads_are_cut_to_the_idle_cores(monkeypatch):
    quiet = {"threads": 2, "tiny_op_s": 2e-5, "one_thread_s": 2e-5, "oversubscribed": False}
    monkeypatch.setattr(threads, "probe", lambda n=None, repeats=15: quiet)
    monkeypatch.setattr(threads, "idle_cpus", lambda window=0.25: 2.1)  # one of 4 cores busy elsewhere
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    set_to, said = [], []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: {0, 1, 2, 3})
    assert threads.choose_threads(0, "aevb-fast eval", say=said.append) == 2
    assert set_to == [2] and "using 2 threads of 4" in said[0] and "keep 1.9 of the CPUs it may use busy" in said[0]


def test_idle_cpus_reads_this_machine():
    idle = threads.idle_cpus(window=0.05)
    assert idle is None or 0 <= idle <= 1024


def test_a_quiet_cpu_or_a_given_count_is_left_alone(monkeypatch):
    quiet = {"threads": 2, "tiny_op_s": 2e-5, "one_thread_s": 2e-5, "oversubscribed": False}
    monkeypatch.setattr(threads, "probe", lambda n=None, repeats=15: quiet)
    monkeypatch.setattr(threads, "idle_cpus", lambda window=0.25: 64.0)
    before = torch.get_num_threads()
    said = []
    assert threads.choose_threads(0, "x", say=said.append) == before and said == []
    try:
        assert threads.choose_threads(1, "x", say=said.append) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_chooses_threads_for_train_eval_and_reproduce(monkeypatch, tmp_path, capsys):
    from aevb_fast import cli

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)

    busy = {"threads": 2, "tiny_op_s": 8e-3, "one_thread_s": 2e-5, "oversubscribed": True}
    monkeypatch.setattr(threads, "probe", lambda n=None, repeats=15: busy)
    monkeypatch.setattr(threads, "idle_cpus", lambda window=0.25: None)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert cli.main(["eval", str(tmp_path / "no-run")]) == 2  # the run is missing; the threads were chosen first
    assert set_to == [1]
    assert "this CPU is busy" in capsys.readouterr().err
    set_to.clear()
    assert cli.main(["eval", str(tmp_path / "no-run"), "--threads", "2"]) == 2  # given: left as asked
    assert set_to == [2] and "busy" not in capsys.readouterr().err
    assert cli.main(["train", "--threads", "-1"]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err

    # A count someone already chose is kept: OMP_NUM_THREADS, or a torchrun process.
    set_to.clear()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["eval", str(tmp_path / "no-run")]) == 2 and set_to == []
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cli.main(["eval", str(tmp_path / "no-run")]) == 2 and set_to == []


def test_a_cgroup_quota_caps_the_threads(monkeypatch):
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: 2)
    monkeypatch.setattr(threads, "idle_cpus", lambda window=0.25: None)
    monkeypatch.setattr(threads, "probe", lambda n=None, repeats=15: {"oversubscribed": False})
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    set_to, said = [], []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert threads.choose_threads(0, "x", say=said.append) == 2
    assert set_to == [2] and "its cgroup allows 2 CPUs" in said[0]


def test_more_threads_than_cpus_is_said(monkeypatch):
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: {0, 1})
    set_to, said = [], []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    assert threads.choose_threads(1000, "aevb-fast train", say=said.append) == 1000
    assert set_to == [1000] and "more than the 2 CPUs" in said[0]
    said.clear()
    assert threads.choose_threads(2, "aevb-fast train", say=said.append) == 2 and said == []
