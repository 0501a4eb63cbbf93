"""Load (checklist 6.3), reduced: the UI in its own process with fake models, driven by gradio_client.
The full run (ramp to 16 users, burst of 50) is `python eval/loadtest.py`; its report is in eval/results/."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import ROOT

pytest.importorskip("gradio_client")
pytestmark = pytest.mark.slow  # a server process driven by concurrent clients: ~20 s, so with the slow tests

spec = importlib.util.spec_from_file_location("loadtest", ROOT / "eval" / "loadtest.py")
loadtest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(loadtest)

QUEUE = 3


@pytest.fixture(scope="module")
def report():
    return loadtest.run(levels=(1, QUEUE), per_user=1, questions=3, burst=12, queue_size=QUEUE, token_delay=0.02,
                        log=lambda m: None)


def test_L1_L2_no_errors_below_the_queue_size(report):
    assert report["errors_below_queue_size"] == 0, report["L2"]
    assert report["L1"]["ok"] == 3 and report["L2"][str(QUEUE)]["ok"] == QUEUE


def test_L3_burst_is_bounded_and_the_rest_are_told_quickly(report):
    l3 = report["L3"]
    assert l3["errors"] == 0, l3["details"]
    # one answer running + QUEUE waiting; a couple more if answers finish while the burst arrives
    assert QUEUE <= l3["accepted"] <= QUEUE + 3 and l3["accepted"] + l3["queue_full"] == 12
    assert l3["reject_max_s"] < 3  # "queue is full" comes back at once (< 0.5 s unloaded)
    assert l3["healthy_after"]


def test_L6_a_killed_client_frees_its_slot(report):
    l6 = report["L6"]
    assert l6["ok"] and l6["after_disconnect_s"] < 2 * l6["service_s"] + 1


def test_L7_rebuild_under_load_fails_no_question(report):
    l7 = report["L7"]
    assert l7["errors"] == 0 and l7["rebuild_rc"] == 0 and l7["new_note_answered"]


def test_memory_stays_flat(report):
    assert report["rss_growth_mb"] < 150, report  # the whole run; a leak per request would show here
