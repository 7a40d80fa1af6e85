"""Data-parallel training under `torchrun` (gloo on CPU, NCCL on GPU).

Each rank runs the networks on its shard of the global batch, then the ranks' outputs are
gathered (with gradient) and every rank computes the loss of the *whole* global batch, the
same numbers a single process computes: the graph regularizer, the class-weighted
cross-entropy and the batch means inside the distiller are not sums over examples, so a
per-rank loss would train a different model. BatchNorm statistics are likewise taken over
the global batch (`SyncBatchNorm` here, since torch's refuses CPU tensors). Gradients are then
averaged over ranks with one flat all-reduce (`average_gradients`), which together give
exactly the single-process gradient (up to float summation order).

Why not `DistributedDataParallel`: the loss is computed from gathered outputs, and the set
of parameters that receive gradients changes with the curriculum (the edge network only
learns once the graph does; frozen teachers never), which DDP's reducer would need
`find_unused_parameters` for. One explicit all-reduce after `backward` is simpler and is
what DDP does underneath.

Dropout (the skeleton GRUs') draws different masks per rank than a single process would;
the result is equal in distribution, not bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto", threads: int = 0) -> Dist:
    """Join the process group torchrun describes in the environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    where = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(where)
    # 0: OMP_NUM_THREADS when set (torchrun's workers, CI's one-thread pass), else the cores
    # shared among this machine's ranks.
    default = int(os.environ.get("OMP_NUM_THREADS") or 0) or (os.cpu_count() or 1) // local_world
    torch.set_num_threads(threads or max(1, default))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, local_world, where)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _Gather(torch.autograd.Function):
    """Concatenate equal shards in rank order; the gradient of a shard is the sum over ranks
    of the gradient of its slice (every rank computes the loss from the gathered tensor)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.size = dist.get_rank(), len(x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather(x: Tensor) -> Tensor:
    """This rank's shard -> the global batch (identity when running alone)."""
    return _Gather.apply(x) if active() else x


def all_reduce_sum(x: Tensor) -> Tensor:
    return _AllReduceSum.apply(x) if active() else x


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch of all ranks, on any
    device (statistics summed in float64, so sharding changes them only by rounding).
    Same parameters and buffers as BatchNorm2d: checkpoints do not know the difference."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and active()):
            return super().forward(x)
        channels = x.shape[1]
        x64 = x.double()
        count = x.new_tensor([x.numel() // channels], dtype=torch.float64)
        local = torch.cat([x64.sum((0, 2, 3)), (x64 * x64).sum((0, 2, 3)), count])
        total = all_reduce_sum(local)
        n = total[-1]
        mean = total[:channels] / n
        var = total[channels : 2 * channels] / n - mean * mean
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.float())
            self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).float())
            self.num_batches_tracked.add_(1)
        shape = (1, channels, 1, 1)
        scale = (torch.rsqrt(var + self.eps) * self.weight.double()).reshape(shape)
        return ((x64 - mean.reshape(shape)) * scale + self.bias.double().reshape(shape)).to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in `module` by SyncBatchNorm with the same state."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync.to(child.weight.device))
        else:
            sync_batchnorm(child)
    return module


def _coalesced(tensors: list[Tensor], collective: Callable[[Tensor], object]) -> None:
    """Run `collective` in place on `tensors` (of one dtype) as one flat tensor: one message
    instead of one per tensor, each of which costs gloo about a millisecond of CPU and of
    latency (a ResNet's state holds a hundred tensors)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    collective(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Mean of every gradient over ranks, in one flat all-reduce. Every rank has gradients
    for the same parameters (they run the same curriculum), so `None` ones are skipped."""
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return

    def mean(flat: Tensor) -> None:
        dist.all_reduce(flat)
        flat /= dist.get_world_size()

    _coalesced(grads, mean)


def broadcast_state(module: nn.Module) -> None:
    """Rank 0's parameters and buffers to every rank (all start from the same weights), one
    broadcast per dtype (float weights, integer batch counts), in the state dict's order."""
    if not active():
        return
    tensors = list(module.state_dict().values())
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        _coalesced([t for t in tensors if t.dtype == dtype], lambda flat: dist.broadcast(flat, 0))
