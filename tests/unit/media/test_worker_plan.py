"""``bridge media --workers N``: the settings, the RTP slices and the restart delays."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from services import cli
from services.common import settings as settings_module
from services.common.settings import Settings, SettingsError, load_settings
from services.media.worker_plan import WorkerSpec, plan_workers, rtp_slices
from services.media.workers import (
    FIRST_RESTART_DELAY,
    MAX_RESTART_DELAY,
    STABLE_AFTER,
    failures_after,
    restart_delay,
)

# --- MEDIA_WORKERS and --workers --------------------------------------------------


def test_media_workers_default_is_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert settings_module.cores() == 3
    assert load_settings({}, None).media_workers == 3
    assert load_settings({"MEDIA_WORKERS": "5"}, None).media_workers == 5


def test_cores_without_affinity_counts_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert settings_module.cores() == 1


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5", "100000"])
def test_bad_media_workers_names_the_setting(raw: str) -> None:
    with pytest.raises(SettingsError, match="MEDIA_WORKERS"):
        load_settings({"MEDIA_WORKERS": raw}, None)


@pytest.mark.parametrize("raw", ["0", "x", "2000"])
def test_bad_workers_option_is_a_usage_error(raw: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["media", "--workers", raw])
    assert exited.value.code == 2


def test_slices_too_small_give_one_line_and_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setenv("RTP_PORT_MIN", "10000")
    monkeypatch.setenv("RTP_PORT_MAX", "10019")
    monkeypatch.setenv("MAX_CALLS", "5")
    assert cli.main(["media", "--workers", "3"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "RTP_PORT_MIN" in lines[0] and "RTP_PORT_MAX" in lines[0]
    assert lines[0].startswith("bridge media: ")


# --- the RTP slices -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "workers"),
    [(10000, 20000, 4), (10001, 20000, 3), (10000, 19999, 7), (30000, 30079, 2), (1024, 65535, 64)],
)
def test_slices_are_disjoint_even_aligned_and_inside_the_range(
    low: int, high: int, workers: int
) -> None:
    slices = rtp_slices(low, high, workers, max_calls=1)
    assert len(slices) == workers
    for ports in slices:
        assert ports.start % 2 == 0 and ports.stop % 2 == 0  # even first, odd last
        assert low <= ports.start and ports.stop - 1 <= high
    for before, after in itertools.pairwise(slices):
        assert before.stop == after.start  # adjacent, never overlapping
    sizes = {len(ports) for ports in slices}
    assert max(sizes) - min(sizes) <= 2  # at most one pair apart
    pairs = (high - (low + low % 2) + 1) // 2
    assert sum(len(ports) for ports in slices) == 2 * pairs  # no pair left out


def test_the_first_slices_take_the_pairs_left_over() -> None:
    # 10 pairs for 3 workers: 4, 3, 3.
    assert rtp_slices(20000, 20019, 3, max_calls=3) == [
        range(20000, 20008),
        range(20008, 20014),
        range(20014, 20020),
    ]


def test_an_odd_minimum_starts_at_the_next_even_port() -> None:
    assert rtp_slices(20001, 20010, 2, max_calls=2) == [range(20002, 20006), range(20006, 20010)]


@pytest.mark.parametrize(
    ("low", "high", "workers", "max_calls"),
    [(10000, 10019, 3, 5), (10000, 10001, 2, 1), (10000, 10199, 4, 26)],
)
def test_a_slice_without_room_for_max_calls_is_refused(
    low: int, high: int, workers: int, max_calls: int
) -> None:
    with pytest.raises(SettingsError) as refused:
        rtp_slices(low, high, workers, max_calls)
    message = str(refused.value)
    assert "RTP_PORT_MIN" in message and "RTP_PORT_MAX" in message and "MAX_CALLS" in message


def test_exactly_max_calls_pairs_each_is_enough() -> None:
    assert [len(s) for s in rtp_slices(10000, 10199, 4, max_calls=25)] == [50, 50, 50, 50]


# --- the plan -------------------------------------------------------------------------


def settings(*, rtp_port_max: int = 10399, ops_port: int = 9092, max_calls: int = 8) -> Settings:
    return Settings(
        instance_id="media-7f9c",
        rtp_port_min=10000,
        rtp_port_max=rtp_port_max,
        ops_port=ops_port,
        max_calls=max_calls,
    )


def test_each_worker_has_its_id_ports_and_ops_port() -> None:
    specs = plan_workers(settings(), 4)
    assert [s.instance_id for s in specs] == [f"media-7f9c-w{i}" for i in range(4)]
    assert [s.ops_port for s in specs] == [9092, 9093, 9094, 9095]
    assert [(s.rtp_port_min, s.rtp_port_max) for s in specs] == [
        (10000, 10099),
        (10100, 10199),
        (10200, 10299),
        (10300, 10399),
    ]
    assert specs[1].environ() == {
        "INSTANCE_ID": "media-7f9c-w1",
        "RTP_PORT_MIN": "10100",
        "RTP_PORT_MAX": "10199",
        "OPS_PORT": "9093",
    }


def test_ops_port_zero_gives_every_worker_a_free_port() -> None:
    assert {s.ops_port for s in plan_workers(settings(ops_port=0), 3)} == {0}


def test_ops_ports_past_65535_are_refused() -> None:
    with pytest.raises(SettingsError, match="OPS_PORT"):
        plan_workers(settings(ops_port=65534), 3)
    assert plan_workers(settings(ops_port=65533), 3)[-1].ops_port == 65535


def test_one_worker_keeps_the_settings_as_they_are() -> None:
    # No slice and no MAX_CALLS check: the single process of before.
    one = settings(rtp_port_max=10009, max_calls=50)
    assert plan_workers(one, 1) == [WorkerSpec(0, "media-7f9c", 10000, 10009, 9092)]


# --- restarts ----------------------------------------------------------------------------


def test_restart_delay_doubles_up_to_its_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 9)]
    assert delays[0] == FIRST_RESTART_DELAY
    assert delays[:5] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert delays[-1] == MAX_RESTART_DELAY
    assert delays == sorted(delays)


def test_a_worker_that_ran_long_enough_starts_the_count_again() -> None:
    assert failures_after(0, 0.5) == 1
    assert failures_after(4, 3.0) == 5
    assert failures_after(4, STABLE_AFTER) == 1
