"""normgen-tune end to end: every sampled schedule compiles and matches the default on
small shapes, a killed run resumes without losing or repeating trials, merge, and the
errors for corrupt, foreign and malformed input. The binary comes from $NORMGEN_TUNE."""
import os
import re
import signal
import sqlite3
import subprocess
import time

import pytest

TUNE = os.environ.get("NORMGEN_TUNE", "")
pytestmark = pytest.mark.skipif(not os.path.exists(TUNE), reason="NORMGEN_TUNE does not name the normgen-tune binary")
FAST = ["--rounds", "1", "--repeats", "1"]


def tune(*args, check=True):
    r = subprocess.run([TUNE, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def trials(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT workload, schedule, status, median_ms, default_ms, max_rel_diff FROM trials").fetchall()


def logged_so_far(db):
    # The run creates the file before its schema, and writes while we read: a missing
    # table or a locked database is "nothing logged yet", not an error.
    if not os.path.exists(db):
        return 0
    try:
        return len(trials(db))
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("workload", ["layer_norm:fwd:f32:48x200", "rms_norm:bwd:bf16:40x130:strided",
                                      "batch_norm:bwd:f32:3x16x5x7:nhwc", "group_norm:fwd:f16:2x64x3x3:nchw",
                                      "switchable_norm:fwd:f32:2x8x5x5:strided", "gn_silu:bwd:f16:2x64x3x3:nhwc",
                                      "add_rms_norm:bwd:f32:40x130", "weight_norm:bwd:f32:24x5x3x3",
                                      "zscore:fwd:f32:300x40"])
def test_every_sampled_schedule_compiles_and_matches(tmp_path, workload):
    db = str(tmp_path / "t.db")
    r = tune("run", "--db", db, "--workload", workload, "--budget", "6", *FAST)
    rows = trials(db)
    assert len(rows) == 6, rows
    bad = [row for row in rows if row[2] != "ok"]
    assert not bad, bad
    assert all(row[3] > 0 and row[4] > 0 for row in rows)
    assert "best" in r.stdout and workload.split(":")[0] in r.stdout
    best = tune("best", "--db", db).stdout.splitlines()
    assert len(best) == 1 and best[0].startswith(workload.split(":")[0])


@pytest.mark.parametrize("workload,foreign", [("layer_norm:fwd:f32:48x200", ("block_kib", "min_blocks", "partial_tile")),
                                              ("rms_norm:bwd:f32:40x130", ("rows_per_task", "task_kib"))])
def test_search_skips_knobs_the_kernel_ignores_and_default_values(tmp_path, workload, foreign):
    # Forward row kernels never read the backward's blocking knobs (and vice versa), and
    # a knob at its default value is the default schedule: neither may cost a trial.
    db = str(tmp_path / "t.db")
    tune("run", "--db", db, "--workload", workload, "--budget", "10", *FAST)
    schedules = [row[1] for row in trials(db)]
    assert len(schedules) == 10 and len(set(schedules)) == 10
    knobs = [kv.split(":") for sch in schedules for kv in sch.split(",") if kv]
    assert not [k for k, _ in knobs if k in foreign], schedules
    defaults = {"accumulators": "2", "out_unroll": "1", "vector_lanes": "0"}
    assert not [(k, v) for k, v in knobs if defaults.get(k) == v], schedules


def test_try_candidates_are_logged_as_the_search_writes_them(tmp_path):
    # --try knob strings run first, within the budget, in the search's canonical form
    # (the space's order, defaults dropped), so export and --resume see them alike; a
    # value the search never draws (min_blocks:3) is kept, and the one-knob steps that
    # follow the random start may begin from any of them.
    db = str(tmp_path / "t.db")
    tune("run", "--db", db, "--workload", "batch_norm:fwd:f32:4x32x7x7:nchw", "--budget", "12",
         "--try", "min_blocks:2,accumulators:2,vector_lanes:8", "--try", "out_unroll:2",
         "--try", "min_blocks:3", *FAST)
    schedules = [row[1] for row in trials(db)]
    assert schedules[:4] == ["", "vector_lanes:8,min_blocks:2", "out_unroll:2", "min_blocks:3"], schedules
    assert len(schedules) == 12 and len(set(schedules)) == 12, schedules
    assert all(row[2] == "ok" for row in trials(db))
    for bad in ("partial_tile:4", "min_blocks", "min_blocks:x"):  # a row-family knob, no value, not a number
        r = tune("run", "--db", str(tmp_path / "u.db"), "--workload", "batch_norm:fwd:f32:4x32x7x7:nchw",
                 "--try", bad, check=False)
        assert r.returncode != 0 and "--try" in r.stderr, r.stderr
        assert not (tmp_path / "u.db").exists()  # refused before the log is created


def test_killed_run_resumes(tmp_path):
    db = str(tmp_path / "t.db")
    args = ["run", "--db", db, "--workload", "layer_norm:bwd:f32:64x300", "--budget", "9", *FAST]
    p = subprocess.Popen([TUNE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if logged_so_far(db) >= 3:
            break
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = trials(db)
    assert 3 <= len(before) < 9
    # Without --resume the log refuses to mix a second search into the first.
    r = tune(*args, check=False)
    assert r.returncode == 2 and "--resume" in r.stderr
    r = tune(*args, "--resume")
    after = trials(db)
    # Every trial of the killed run is still there (its times may differ: the run ends by
    # re-timing the best candidate, which can be one of them).
    assert len(after) == 9 and {r[:3] for r in before} <= {r[:3] for r in after}
    assert f"{9 - len(before)} measured, {len(before)} from the log" in r.stdout


def test_merge(tmp_path):
    a, b, out = (str(tmp_path / n) for n in ("a.db", "b.db", "out.db"))
    tune("run", "--db", a, "--workload", "rms_norm:fwd:f32:32x128", "--budget", "3", *FAST)
    tune("run", "--db", b, "--workload", "batch_norm:fwd:f32:2x8x4x4", "--budget", "3", *FAST)
    r = tune("merge", "--db", out, a, b)
    assert "3 new trial(s)" in r.stdout
    assert len(trials(out)) == 6
    r = tune("merge", "--db", out, a)
    assert "0 new trial(s)" in r.stdout and len(trials(out)) == 6


def test_corrupt_foreign_and_bad_input(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    r = tune("best", "--db", str(junk), check=False)
    assert r.returncode == 2 and "junk.db" in r.stderr and "database" in r.stderr
    foreign = str(tmp_path / "foreign.db")
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (x)")
    r = tune("best", "--db", foreign, check=False)
    assert r.returncode == 2 and "another application" in r.stderr
    r = tune("merge", "--db", str(tmp_path / "m.db"), str(junk), check=False)
    assert r.returncode == 2 and "junk.db" in r.stderr
    r = tune("run", "--db", str(tmp_path / "x.db"), "--workload", "layer_norm:fwd:f64:8x8", check=False)
    assert r.returncode == 2 and "dtype" in r.stderr
    r = tune("run", "--db", str(tmp_path / "x.db"), "--workload", "batch_norm:fwd:f32:2x8x4x4:contig", check=False)
    assert r.returncode == 2 and "layout" in r.stderr
    for option, value in (("--budget", "1x"), ("--threads", "0"), ("--autoscheduler-timeout", "-1")):
        r = tune("run", "--db", str(tmp_path / "x.db"), "--workload", "layer_norm:fwd:f32:8x8", option, value,
                 check=False)
        assert r.returncode == 2 and option in r.stderr and value in r.stderr, r.stderr


def cpu_key(target):
    """The ` cpu=` an exported line carries for trials of `target`: its most specific x86
    instruction-set feature (none off x86)."""
    features = target.split("-")
    if features[0] != "x86":
        return ""
    for f in ("avx512_sapphirerapids", "avx512_zen4", "avx512_cannonlake", "avx512_skylake", "avx512", "avx2", "avx",
              "sse41"):
        if f in features:
            return " cpu=" + f
    return ""


def test_export_writes_the_winners_as_a_tuned_table(tmp_path):
    db, out = str(tmp_path / "t.db"), tmp_path / "tuned.list"
    tune("run", "--db", db, "--workload", "rms_norm:fwd:f32:4x16x512", "--budget", "2", *FAST)
    with sqlite3.connect(db) as c:  # a clear winner, and one within the gain threshold
        target, machine, hv, commit = c.execute(
            "SELECT target, machine, halide_version, normgen_commit FROM trials LIMIT 1").fetchone()
        for wl, sched, ms in (("rms_norm:fwd:f32:4x16x512:contig", "accumulators:4,rows_per_task:8", 0.5),
                              ("batch_norm:bwd:f32:2x8x3x3:nhwc", "block_kib:64", 0.99)):
            c.execute("INSERT INTO trials (workload, target, threads, schedule, status, median_ms, default_ms, "
                      "max_rel_diff, compile_s, error, machine, halide_version, normgen_commit, confirmed, created) "
                      "VALUES (?, ?, 1, ?, 'ok', ?, 1.0, 0, 0, '', ?, ?, ?, 1, 'now')",
                      (wl, target, sched, ms, machine, hv, commit))
    r = tune("export", "--db", db, "--out", str(out), "--target", target)
    assert "1 tuned kernel(s)" in r.stdout
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert lines == ["rms_norm fwd dtypes=f32 layouts=contig has_weight=true "
                     "schedule=accumulators:4,rows_per_task:8 shape=64x512 threads=1" + cpu_key(target)]
    assert "GENERATED by normgen-tune export" in out.read_text()
    r = tune("export", "--db", db, "--out", str(out), "--target", target, "--threads", "2")
    assert "0 tuned kernel(s)" in r.stdout
    # Several thread counts in one table: a line per (kernel, thread count).
    with sqlite3.connect(db) as c:
        c.execute("INSERT INTO trials (workload, target, threads, schedule, status, median_ms, default_ms, "
                  "max_rel_diff, compile_s, error, machine, halide_version, normgen_commit, confirmed, created) "
                  "VALUES ('rms_norm:fwd:f32:4x16x512:contig', ?, 2, 'rows_per_task:64', 'ok', 0.6, 1.0, 0, 0, '', "
                  "?, ?, ?, 1, 'now')", (target, machine, hv, commit))
    r = tune("export", "--db", db, "--out", str(out), "--target", target, "--threads", "1,2")
    assert "2 tuned kernel(s)" in r.stdout
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert lines[1] == ("rms_norm fwd dtypes=f32 layouts=contig has_weight=true schedule=rows_per_task:64 shape=64x512 "
                        "threads=2" + cpu_key(target))
    # Lines name the instruction set their trials ran on (the runtime dispatches them only
    # on CPUs that have it): an AVX-512 (Zen 4) machine's trial, and an Arm one's (none).
    for other, want in (("x86-64-linux-avx-avx2-avx512-avx512_cannonlake-avx512_skylake-avx512_zen4-f16c-fma-sse41",
                         " cpu=avx512_zen4"), ("arm-64-linux", "")):
        with sqlite3.connect(db) as c:
            c.execute("INSERT INTO trials (workload, target, threads, schedule, status, median_ms, default_ms, "
                      "max_rel_diff, compile_s, error, machine, halide_version, normgen_commit, confirmed, created) "
                      "VALUES ('rms_norm:fwd:f32:4x16x512:contig', ?, 1, 'rows_per_task:64', 'ok', 0.6, 1.0, 0, 0, "
                      "'', ?, ?, ?, 1, 'now')", (other, machine, hv, commit))
        tune("export", "--db", db, "--out", str(out), "--target", other)
        lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
        assert lines == ["rms_norm fwd dtypes=f32 layouts=contig has_weight=true schedule=rows_per_task:64 "
                         "shape=64x512 threads=1" + want], (other, lines)
    assert tune("export", "--db", db, "--out", str(out), "--threads", "0", check=False).returncode == 2


def test_export_drops_knobs_that_leave_the_default(tmp_path):
    # Logs from before the search skipped them hold knob strings with default values or
    # knobs the kernel's direction ignores: exported, those are the default schedule (a
    # "winner" that timed noise) or carry dead knobs.
    db, out = str(tmp_path / "t.db"), tmp_path / "tuned.list"
    tune("run", "--db", db, "--workload", "rms_norm:fwd:f32:4x16x512", "--budget", "1", *FAST)
    with sqlite3.connect(db) as c:
        target, machine, hv, commit = c.execute(
            "SELECT target, machine, halide_version, normgen_commit FROM trials LIMIT 1").fetchone()
        for wl, sched in (("layer_norm:fwd:f32:64x256:contig", "accumulators:2,out_unroll:1,block_kib:64"),
                          ("rms_norm:bwd:f32:64x256:contig", "accumulators:2,rows_per_task:8,block_kib:256")):
            c.execute("INSERT INTO trials (workload, target, threads, schedule, status, median_ms, default_ms, "
                      "max_rel_diff, compile_s, error, machine, halide_version, normgen_commit, confirmed, created) "
                      "VALUES (?, ?, 1, ?, 'ok', 0.5, 1.0, 0, 0, '', ?, ?, ?, 1, 'now')",
                      (wl, target, sched, machine, hv, commit))
    r = tune("export", "--db", db, "--out", str(out), "--target", target)
    assert "1 tuned kernel(s)" in r.stdout, r.stdout
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert lines == ["rms_norm bwd dtypes=f32 layouts=contig has_weight=true schedule=block_kib:256 shape=64x256 "
                     "threads=1" + cpu_key(target)]


def test_autoscheduler_baselines_and_report(tmp_path):
    """Halide's CPU autoschedulers run on the same workload as recorded baselines (a
    failure is recorded, never fatal); they are never export candidates."""
    db = str(tmp_path / "t.db")
    r = tune("run", "--db", db, "--workload", "layer_norm:fwd:f32:64x256", "--budget", "2", *FAST,
             "--autoschedulers", "Adams2019,Mullapudi2016,Li2018")
    rows = {row[1]: row for row in trials(db)}
    for name in ("Adams2019", "Mullapudi2016", "Li2018"):
        row = rows[f"autoscheduler:{name}"]
        assert row[2] in ("ok", "compile_error", "run_error"), row
    assert any(rows[f"autoscheduler:{n}"][2] == "ok" for n in ("Adams2019", "Mullapudi2016", "Li2018")), rows
    assert "autoscheduler" not in tune("best", "--db", db).stdout
    report = tune("report", "--db", db).stdout
    assert "| workload | thr | default ms | tuned |" in report and "Adams2019" in report
    assert "layer_norm:fwd:f32:64x256:contig | 1 |" in report


def test_autoscheduler_past_its_time_limit_is_killed_and_logged(tmp_path):
    """Autoscheduler trials run in their own process: one that exceeds
    --autoscheduler-timeout is killed and logged as a compile_error saying so, and the
    run goes on (Adams2019 has run > 5 min and > 16 GiB on GroupNorm backward)."""
    db = str(tmp_path / "t.db")
    r = tune("run", "--db", db, "--workload", "group_norm:bwd:f32:4x32x6x6:nchw", "--budget", "1", *FAST,
             "--autoschedulers", "Adams2019,Li2018", "--autoscheduler-timeout", "0.3")
    rows = {row[1]: row for row in trials(db)}
    assert rows[""][2] == "ok", rows
    with sqlite3.connect(db) as c:
        err = dict(c.execute("SELECT schedule, error FROM trials WHERE schedule LIKE 'autoscheduler:%'").fetchall())
    for name in ("Adams2019", "Li2018"):
        assert rows[f"autoscheduler:{name}"][2] == "compile_error", rows
        assert "did not finish within 0.3 s" in err[f"autoscheduler:{name}"], err
    assert "group_norm:bwd:f32:4x32x6x6:nchw" in r.stdout


@pytest.mark.parametrize("evict", [None, "8"])
def test_time_compares_knob_strings_side_by_side(evict):
    # `time` runs the default and each knob string interleaved; --evict-mib writes that
    # much of another buffer before each timed run, so the data comes from DRAM.
    extra = ["--evict-mib", evict] if evict else []
    r = tune("time", "rms_norm:fwd:f32:64x256", "--threads", "1", "--rounds", "2", *extra, "", "accumulators:4")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("rms_norm:fwd:f32:64x256:contig, 1 thread(s)"), r.stdout
    assert ("caches evicted by 8 MiB before each run" if evict else "data in cache") in lines[0], r.stdout
    assert lines[1].startswith("(defaults)") and "1.000x of the first" in lines[1], r.stdout
    assert lines[2].startswith("accumulators:4") and len(lines) == 3, r.stdout
    assert all(float(ln.split()[1]) > 0 for ln in lines[1:]), r.stdout
    bad = tune("time", "rms_norm:fwd:f32:64x256", "--evict-mib", "-1", check=False)
    assert bad.returncode != 0 and "--evict-mib" in bad.stderr, bad.stderr


def test_resume_with_a_larger_budget_replays_the_random_start(tmp_path):
    # The random start is drawn in fixed blocks, so its first samples do not depend on
    # the budget: a second run with twice the budget finds the first run's default and
    # its three random-start trials in the log (the one-knob steps after them differ).
    db = str(tmp_path / "t.db")
    args = ["run", "--db", db, "--workload", "layer_norm:bwd:f32:64x300", *FAST]
    first = tune(*args, "--budget", "6")
    assert "(6 measured, 0 from the log)" in first.stdout, first.stdout
    second = tune(*args, "--budget", "12", "--resume")
    measured, logged = (int(v) for v in re.search(r"\((\d+) measured, (\d+) from the log\)", second.stdout).groups())
    assert measured + logged == 12 and logged >= 4, second.stdout
    assert len(trials(db)) == 6 + measured
