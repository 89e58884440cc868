"""bench/preprocess.py's repeated rows: the median run is a real run, every run's CPU is kept."""

from tests.conftest import bench_module


def _bench():
    return bench_module("preprocess")


def _run(cpu: float, wall: float) -> dict:
    return {"documents": 10, "system": "doctags", "cpu_seconds": cpu, "seconds": wall}


def test_median_run_is_the_middle_run_by_cpu_with_its_own_wall_time():
    bench = _bench()
    runs = [_run(142.0, 90.0), _run(96.0, 55.0), _run(110.0, 67.0)]
    row = bench.median_run(runs)
    assert (row["cpu_seconds"], row["seconds"]) == (110.0, 67.0)
    assert row["cpu_runs"] == [142.0, 96.0, 110.0]  # in the order they ran
    assert bench.each_run(row) == "142/96/110"


def test_even_count_takes_the_lower_middle_and_one_run_shows_no_spread():
    bench = _bench()
    row = bench.median_run([_run(120.0, 1.0), _run(100.0, 2.0), _run(130.0, 3.0), _run(90.0, 4.0)])
    assert row["cpu_seconds"] == 100.0
    single = bench.median_run([_run(101.0, 60.0)])
    assert single["cpu_seconds"] == 101.0
    assert bench.each_run(single) == "-"
