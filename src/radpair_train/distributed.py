"""Data parallelism: joining the process group, small collectives, synchronised BatchNorm.

A run is one process per device. ``torchrun`` (single node or multi-node) describes the
group in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``; a SLURM job
step started with ``srun`` (one task per GPU, no torchrun) describes it in ``SLURM_*``
variables, which are read here without modifying the environment. NCCL is used on GPUs,
gloo on CPUs (gloo is what the tests run on).

Why a CPU SyncBatchNorm: :class:`torch.nn.SyncBatchNorm` refuses CPU tensors, yet the
distributed path must be testable on CPU, where two processes with per-process batch
statistics cannot reproduce the single-process gradients. :class:`GlobalBatchNorm`
computes the statistics over all processes with an autograd-aware all-reduce.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from radpair.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    created_group: bool = False  # this process initialised the group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass
class LaunchEnv:
    """Where this process sits in the job, as the launcher described it."""

    rank: int
    world_size: int
    local_rank: int
    init_method: str | None  # None: torch reads MASTER_ADDR / MASTER_PORT itself (env://)


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu-[003-005,010],cpu01`` -> ``gpu-003``."""
    m = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ConfigError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR yourself")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def launch_env(environ: dict[str, str] | None = None) -> LaunchEnv | None:
    """Read the launcher's variables; ``None`` for a single process."""
    env = os.environ if environ is None else environ
    if int(env.get("WORLD_SIZE", "1")) > 1:  # torchrun, or a user who set the variables
        return LaunchEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")), None)
    ntasks = int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")))
    if "SLURM_PROCID" in env and ntasks > 1:
        addr = env.get("MASTER_ADDR") or first_slurm_host(env.get("SLURM_STEP_NODELIST") or env["SLURM_JOB_NODELIST"])
        port = env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
        return LaunchEnv(int(env["SLURM_PROCID"]), ntasks, int(env.get("SLURM_LOCALID", "0")), f"tcp://{addr}:{port}")
    return None


def init_distributed(device: torch.device, backend: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group that the launcher describes, if any; set the local GPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # the caller set the group up
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_backend())
    env = launch_env()
    if env is None:
        return DistInfo()
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("train.dist_backend=nccl needs GPUs; use gloo (or auto) on CPU")
    if device.type == "cuda":
        torch.cuda.set_device(env.local_rank % max(1, torch.cuda.device_count()))
    kwargs = {"backend": backend, "rank": env.rank, "world_size": env.world_size}
    kwargs["timeout"] = datetime.timedelta(seconds=timeout_s)
    if env.init_method:
        kwargs["init_method"] = env.init_method
    dist.init_process_group(**kwargs)
    return DistInfo(env.rank, env.world_size, env.local_rank, backend, created_group=True)


def shutdown(info: DistInfo) -> None:
    if info.created_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _collective_device(info: DistInfo, device: torch.device) -> torch.device:
    return device if info.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(values: torch.Tensor, info: DistInfo, device: torch.device) -> torch.Tensor:
    """Sum a small (detached) tensor over processes; identity for one process."""
    if not info.distributed:
        return values
    import torch.distributed as dist

    t = values.detach().to(_collective_device(info, device), torch.float64).clone()
    dist.all_reduce(t)
    return t.cpu()


def all_gather_1d(values: torch.Tensor, info: DistInfo, device: torch.device) -> torch.Tensor:
    """Concatenate equal-length 1-D (detached) tensors from all processes in rank order."""
    if not info.distributed:
        return values
    import torch.distributed as dist

    t = values.detach().to(_collective_device(info, device)).contiguous()
    out = [torch.empty_like(t) for _ in range(info.world_size)]
    dist.all_gather(out, t)
    return torch.cat(out).cpu()


def broadcast_int(value: int, info: DistInfo, device: torch.device, src: int = 0) -> int:
    if not info.distributed:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=_collective_device(info, device))
    dist.broadcast(t, src)
    return int(t.item())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier()


# -- synchronised BatchNorm -------------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """all-reduce(sum) whose backward is all-reduce(sum) of the gradients.

    Every process backpropagates its own loss; the statistics feed all of them, so the
    gradient reaching one process's input is the sum over processes.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the whole global batch, on any device.

    Same parameters and buffers as ``BatchNorm{1,2,3}d`` (state dicts are interchangeable).
    Mean and variance use two all-reduces (sum, then the centred sum of squares) rather
    than E[x²]−E[x]², which loses precision; outside training, or in a single process, it
    is exactly ``F.batch_norm``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        world = _world_size()
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or world == 1:
            return super().forward(input)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input if input.dtype in (torch.float32, torch.float64) else input.float()  # stats never in 16 bits
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        totals = _AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n
        if self.training and self.track_running_stats:
            with torch.no_grad():
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach().to(self.running_var.dtype), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Torch's SyncBatchNorm on GPUs; :class:`GlobalBatchNorm` elsewhere (CPU with gloo)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_global(module)


def _convert_global(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.train(module.training)
        out = out.to(next(iter(module.state_dict().values())).device) if module.state_dict() else out
    for name, child in module.named_children():
        out.add_module(name, _convert_global(child))
    return out
