import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
if not os.environ.get("PIXELCNN_DATA"):                          # unset or empty, as the package reads it
    os.environ["PIXELCNN_DATA"] = str(ROOT.parent / "shared" / "data")
# One thread in every worker and in the processes the tests start (they inherit the variable): the tensors
# are tiny, and beside the other worker a second thread would fight it for the cores.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

# A test over this many seconds (of its call, on the machine at hand) belongs in the slow tier; the summary
# names any that is not marked so.
SLOW_SECONDS = 3.0


@pytest.fixture(autouse=True)
def one_thread():
    """Every test starts on one thread, whatever a test before it in this worker set."""
    torch.set_num_threads(1)


def data_available() -> bool:
    return (Path(os.environ["PIXELCNN_DATA"]) / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


SKIP_MISSING_DATA = "PIXELCNN_SKIP_MISSING_DATA"     # =1: tests whose data is missing skip instead of failing


def requires_data(available: bool, what: str, install: str):
    """Mark a test that needs data files: where they are missing it fails, naming the command that
    installs them, unless $PIXELCNN_SKIP_MISSING_DATA=1 (which CI never sets) makes it skip."""
    return pytest.mark.requires_data(available=available, what=what, install=install)


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires_data"):
        if not mark.kwargs["available"]:
            message = (f"{mark.kwargs['what']} not found: {mark.kwargs['install']} "
                       f"(or set {SKIP_MISSING_DATA}=1 to skip the tests that need it)")
            if os.environ.get(SKIP_MISSING_DATA) == "1":
                pytest.skip(message)
            pytest.fail(message, pytrace=False)


needs_mnist = requires_data(data_available(), f"MNIST in $PIXELCNN_DATA ({os.environ['PIXELCNN_DATA']}/mnist)",
                            "run `make test`, which points PIXELCNN_DATA at ../shared/data, or put the four "
                            "MNIST .gz files there")

# A model small enough that a few training steps, an evaluation and a sample take seconds.
TINY_FLAGS = ["--hidden", "8", "--layers", "2", "--output-hidden", "0"]


def pytest_collection_modifyitems(config, items):
    """The slow tier first, each tier in collection order (a stable sort): workers start on the long tests and
    finish on the short ones, so neither waits at the end for one long test."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)       # a stable sort


def pytest_terminal_summary(terminalreporter):
    spread_groups(terminalreporter)
    unmarked = sorted(((r.duration, r.nodeid) for r in terminalreporter.getreports("passed")
                       if r.when == "call" and r.duration > SLOW_SECONDS and "slow" not in r.keywords), reverse=True)
    if unmarked:
        terminalreporter.write_sep("-", f"tests over {SLOW_SECONDS:.0f} s not marked slow (make test-fast runs them)")
        for duration, nodeid in unmarked:
            terminalreporter.write_line(f"{duration:6.2f}s {nodeid}")


def spread_groups(terminalreporter) -> None:
    """Name any module whose xdist group ran on more than one worker: ``--dist loadgroup`` keeps a group on one,
    so that its fixtures (a browser, an import probe) are built once, and a pytest that drops xdist's group
    suffix from the node ids spreads them silently."""
    workers: dict[str, set[str]] = {}
    for report in terminalreporter.getreports("passed") + terminalreporter.getreports("failed"):
        node = getattr(report, "node", None)                       # the worker, under xdist
        if node is not None and "xdist_group" in report.keywords:
            workers.setdefault(report.nodeid.split("::")[0], set()).add(node.gateway.id)
    for module, ids in sorted(workers.items()):
        if len(ids) > 1:
            terminalreporter.write_line(f"the xdist group of {module} ran on {len(ids)} workers ({', '.join(sorted(ids))}), "
                                        f"building its module fixtures once each: is --dist loadgroup working?")
