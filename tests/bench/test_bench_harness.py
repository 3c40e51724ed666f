"""The shared timing harness of the benchmark suites: interleaving, summaries, upserted results."""

import json

import pytest
import torch

from aevb_fast.bench import harness


def test_interleaved_warms_up_calibrates_and_alternates():
    calls = []

    def measure(name, seconds):
        def run(iterations):
            calls.append((name, iterations))
            return seconds

        return run

    timing = harness.interleaved({"a": measure("a", 0.01), "b": measure("b", 0.02)}, repeats=3, min_time=0.1)
    # Warm-up (2 iterations each), calibration (1 each), then rounds a, b, a, b, a, b with enough
    # iterations that the slower provider (0.02 s) lasts min_time.
    assert calls[:4] == [("a", 2), ("b", 2), ("a", 1), ("b", 1)]
    assert calls[4:] == [("a", 5), ("b", 5)] * 3
    assert timing["a"]["median_s"] == pytest.approx(0.01) and timing["b"]["p80_s"] == pytest.approx(0.02)


def test_timing_summary_and_spread():
    summary = harness.timing_summary([1.0, 2.0, 3.0, 4.0, 100.0])
    assert summary["median_s"] == 3.0
    assert summary["p20_s"] < summary["median_s"] < summary["p80_s"]
    assert harness.spread({"median_s": 1e-3, "p20_s": 0.9e-3, "p80_s": 1.1e-3}) == "1.000ms +-10%"
    # One timing has no spread: it says so rather than claim +-0%.
    assert harness.spread(harness.timing_summary([2e-3])) == "2.000ms (1 run)"
    assert harness.spread(harness.timing_summary([2e-3, 2e-3])) == "2.000ms +-0%"


def test_upsert_replaces_rows_of_the_same_key_and_keeps_the_others(tmp_path):
    path = tmp_path / "cpu" / "ops.jsonl"
    row = {"suite": "ops", "op": "gaussian_kl", "mode": "forward", "batch": 100, "dtype": "float32", "value": 1}
    assert harness.upsert([row], path) == (0, 1)
    assert harness.upsert([{**row, "value": 2}], path) == (1, 0)  # the same case again: replaced
    assert harness.upsert([{**row, "batch": 4096}], path) == (0, 1)  # another case: added
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["batch"], r["value"]) for r in rows) == [(100, 2), (4096, 1)]
    assert all("torch" in r and "date" in r for r in rows)
    assert not list(path.parent.glob("*.tmp"))


def test_upsert_refuses_a_corrupt_file_without_touching_it(tmp_path):
    path = tmp_path / "ops.jsonl"
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="ops.jsonl:1: not a results row"):
        harness.upsert([{"op": "x"}], path)
    assert path.read_text() == "not json\n"


def test_a_wide_spread_marks_a_row_noisy():
    from aevb_fast.bench import op_suite

    quiet = {"median_s": 1.0, "p20_s": 0.95, "p80_s": 1.05}
    wide = {"median_s": 1.0, "p20_s": 0.6, "p80_s": 1.2}  # p80/p20 = 2
    assert not harness.noisy({"a": quiet, "b": quiet}) and harness.noisy({"a": quiet, "b": wide})
    row = {
        "op": "gaussian_kl",
        "samples": 1,
        "dtype": "float32",
        "mode": "forward",
        "batch": 100,
        "timing": {p: quiet for p in op_suite.PROVIDERS},
        "speedup_vs_eager": 1.0,
        "speedup_vs_compiled": 1.0,
        "gbps": 1.0,
        "bandwidth_share": 0.5,
        "copy_gbps": 2.0,
        "memory": {p: {"saved_bytes": 0} for p in op_suite.PROVIDERS},
    }
    assert "noisy" not in op_suite.format_table([row])
    table = op_suite.format_table([row, {**row, "timing": {**row["timing"], "eager": wide}}])
    assert table.splitlines()[3].endswith("  noisy") and "rerun on a quiet machine" in table


def test_a_row_whose_probe_saw_oversubscription_is_marked():
    from aevb_fast.bench import harness

    timing = {"a": {"median_s": 1.0, "p20_s": 1.0, "p80_s": 1.0}}
    quiet = {"timing": timing, "probe": {"oversubscribed": False}}
    busy = {"timing": timing, "probe": {"oversubscribed": True, "tiny_op_s": 8e-3, "one_thread_s": 2e-5}}
    assert harness.row_marks(quiet) == "" and harness.noisy_mark([quiet]) == []
    assert harness.row_marks(busy) == "  oversubscribed"
    assert any("oversubscribed" in line for line in harness.noisy_mark([quiet, busy]))
    assert harness.row_marks({"timing": timing}) == ""  # GPU rows and rows saved before the probe


def test_the_default_ops_are_the_op_families_functions():
    # The suite's default list is read from aevb_fast.ops.FAMILIES: a new family's function is
    # benched (or, a linear head, timed by --head) without another list to edit.
    from aevb_fast import ops
    from aevb_fast.bench import op_suite

    functions = [op for family in ops.FAMILIES for op in family.ops]
    assert list(op_suite.DEFAULT_OPS) == [op for op in functions if op not in ops.LINEAR_HEAD_OPS]
    assert all(op in op_suite.BENCHED_OPS for op in op_suite.DEFAULT_OPS)


def test_time_profile_names_where_the_time_goes_and_lets_errors_through():
    a = torch.randn(256, 256)
    profile = harness.time_profile(lambda: (a @ a).sum(), cuda=False, top=2)
    assert len(profile["top"]) == 2 and profile["total_ms"] >= sum(e["ms"] for e in profile["top"]) > 0
    assert "aten::mm" in [e["name"] for e in profile["top"]]
    assert all(e["calls"] >= 1 for e in profile["top"])
    with pytest.raises(ValueError, match="the step's own"):  # not an {"error"} row: the step failed
        harness.time_profile(lambda: (_ for _ in ()).throw(ValueError("the step's own")), cuda=False)
    lines = harness.format_profiles("title", {"eager": profile, "fused": {"error": "CUPTI refused"}}, width=12)
    assert lines[0] == "title" and lines[-1] == "  fused: no profile (CUPTI refused)"
    assert all(len(line.split("x  ", 1)[-1]) <= 12 for line in lines[2:4])
