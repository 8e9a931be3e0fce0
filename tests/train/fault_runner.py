"""Test-only entry point: the train stage's command line with a fault injected on rank 1 at its second step.

Usage (under torchrun): fault_runner.py raise|hang <get3d.train.launch args...>
"""
import os
import sys
import time

from get3d.train import launch, losses


def main() -> int:
    mode = sys.argv[1]
    rank = int(os.environ.get("RANK", "0"))
    calls = {"n": 0}
    orig = losses.GET3DLoss.accumulate

    def accumulate(self, phase, *a, **kw):
        if rank == 1 and phase == "Gmain":
            calls["n"] += 1
            if calls["n"] == 2:
                if mode == "raise":
                    raise RuntimeError("injected failure on rank 1")
                print("injected hang on rank 1", flush=True)
                time.sleep(3600)
        return orig(self, phase, *a, **kw)

    losses.GET3DLoss.accumulate = accumulate
    return launch.main(sys.argv[2:])


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record
    sys.exit(record(main)())
