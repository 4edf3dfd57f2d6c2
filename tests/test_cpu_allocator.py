"""interp.device.cpu_allocator: freed memory is kept while a CPU job runs (glibc), glibc's
defaults come back afterwards (also on error, once for nested uses), and it can be turned off.
The page-fault counts are the known answer: a loop that allocates and frees the same large
block faults no page in once the heap inside the context holds it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from interp import device as dev
from interp.featvis.render import render

glibc = dev._glibc()
needs_glibc = pytest.mark.skipif(glibc is None, reason="glibc's mallopt is not available")


_PROBE = """
import resource, torch
from interp import device as dev

def faults(rounds=8, mib=64):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        t = torch.empty(mib << 18)  # float32: 4 bytes each
        t.fill_(1.0)
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = faults()
with dev.cpu_allocator("cpu") as active:
    assert active
    faults()  # the heap grows to hold the block (in a few rounds)
    inside = faults()
after = faults()
print(outside, inside, after, resource.getpagesize())
"""


@needs_glibc
def test_freed_memory_is_reused_inside():
    """Minor page faults of allocating, touching and freeing a 64 MiB tensor 8 times, in a
    fresh process. Inside the context, once the heap has grown, no round faults a page in.
    With glibc's defaults at least the first rounds do; how many depends on glibc's dynamic
    thresholds and the thread count (8 of 8 rounds alone, 2 of 8 under the suite's
    environment), so only "more than inside" is asserted there. That the defaults come back
    on exit is the mallopt calls' test below."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    outside, inside, _after, page = (int(v) for v in out.split())
    pages = (64 << 20) // page
    assert inside <= pages // 4  # reused: no new pages
    assert outside >= pages > inside


@needs_glibc
def test_nested_uses_restore_once_and_errors_restore_too(monkeypatch):
    calls: list[tuple[int, int]] = []

    class Spy:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

        def malloc_trim(self, pad: int) -> int:
            calls.append(("trim", pad))
            return 1

    monkeypatch.setattr(dev, "_glibc", lambda: Spy())
    with pytest.raises(RuntimeError, match="boom"):
        with dev.cpu_allocator("cpu"):
            with dev.cpu_allocator("cpu"):
                assert calls == [(dev._M_MMAP_MAX, 0), (dev._M_TRIM_THRESHOLD, 1 << 30)]
            assert len(calls) == 2  # the inner exit restores nothing
            raise RuntimeError("boom")
    assert calls[2:] == [
        (dev._M_MMAP_MAX, dev._GLIBC_MMAP_MAX),
        (dev._M_TRIM_THRESHOLD, dev._GLIBC_TRIM_THRESHOLD),
        ("trim", 0),
    ]
    assert dev._allocator_depth == 0


def test_off_by_environment_and_for_other_devices(monkeypatch):
    monkeypatch.setattr(dev, "_glibc", lambda: pytest.fail("glibc must not be touched"))
    monkeypatch.setenv("INTERP_CPU_ALLOCATOR", "0")
    with dev.cpu_allocator("cpu") as active:
        assert not active
    monkeypatch.delenv("INTERP_CPU_ALLOCATOR")
    with dev.cpu_allocator("meta") as active:
        assert not active


def test_render_runs_inside_it(monkeypatch):
    seen: list[bool] = []
    real = dev.cpu_allocator

    def spy(device):
        seen.append(True)
        return real(device)

    monkeypatch.setattr(dev, "cpu_allocator", spy)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    render(net, "1:0", steps=2, size=16, progress=False)
    assert seen == [True] and dev._allocator_depth == 0


def test_the_measuring_instruments_run_inside_it(monkeypatch):
    """examples and dissect (and the hierarchy's per-network probes) keep freed memory on the
    model's device, whatever wraps the model."""
    from interp import dissect, examples
    from interp.data.concepts import PartsWorldConcepts

    seen: list[str] = []
    real = dev.cpu_allocator

    def spy(device):
        seen.append(str(device))
        return real(device)

    monkeypatch.setattr(dev, "cpu_allocator", spy)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    examples(net, "partsworld", ["1"], n=4, size=16, k=1, progress=False)
    dissect(net, PartsWorldConcepts(n=4, size=16), ["1"], progress=False)
    assert seen == ["cpu", "cpu"] and dev._allocator_depth == 0
    assert dev._device_of(torch.nn.Identity()).type == "cpu"  # no parameters: the CPU
