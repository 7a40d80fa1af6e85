"""training/distributed.py's flattening of many tensors into one collective (the two-process
training itself: tests/training/test_ddp.py)."""

import torch
from torch import nn

from training import distributed


def test_one_flat_collective_writes_each_tensor_back_in_place():
    """What the collective does to the flat tensor reaches every tensor, each its own slice:
    here the state dict of a network whose parameters, seen through it, must change too."""
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    floats = [t for t in net.state_dict().values() if t.dtype == torch.float32]
    before = [t.clone() for t in floats]
    seen = []

    def collective(flat: torch.Tensor) -> None:  # stands for gloo's in-place all-reduce
        seen.append(flat.clone())
        flat.mul_(2).add_(torch.arange(flat.numel(), dtype=flat.dtype))

    distributed._coalesced(floats, collective)
    assert torch.equal(seen[0], torch.cat([t.reshape(-1) for t in before]))  # one message
    offset = 0
    for old, new in zip(before, floats, strict=True):
        ramp = torch.arange(offset, offset + old.numel(), dtype=old.dtype).view_as(old)
        assert torch.equal(new, old * 2 + ramp)
        offset += old.numel()
    assert torch.equal(net[0].weight.detach(), floats[0])  # the module's own parameter
