"""A launched stage that joins a gloo group, all-reduces, and leaves the group to the process's
exit, as lm-eval and TRL do (tests/test_launch.py)."""

import torch
import torch.distributed as dist


def all_reduce_and_leave(out: str) -> None:
    dist.init_process_group("gloo")
    t = torch.ones(1000)
    for _ in range(20):
        dist.all_reduce(t)
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            f.write(f"{t[0].item():.0f}\n")
