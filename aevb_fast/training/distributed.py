"""Data parallelism across processes started by ``torchrun`` (gloo on CPU, NCCL on GPU).

``DistributedContext`` is what the trainer needs of it: this process's rank and device, the
gradients averaged over ranks, sums over ranks, and a clean end. With one process (no
``WORLD_SIZE``, or 1) every method is a no-op or a local computation.
"""

from __future__ import annotations

import importlib
import os

import torch
import torch.distributed as dist


def process_device(device: str) -> torch.device:
    """This process's device: ``device``, or on CUDA under torchrun, the GPU of its local rank."""
    if torch.device(device).type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


class DistributedContext:
    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1 and not dist.is_initialized():
            # Imported first on purpose: importing torch._dynamo (torch.optim does) after the group
            # exists keeps the group alive past destroy_process_group (torch 2.13), and a gloo group
            # alive at interpreter shutdown aborts the process now and then.
            importlib.import_module("torch._dynamo")

            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.device = process_device(device)
        if self.device.type == "cuda" and self.world > 1:
            torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's share of a global minibatch (or of an evaluation set)."""
        return items[self.rank :: self.world]

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Every rank's gradients replaced by their mean, in one all-reduce.

        Not DistributedDataParallel: in this trainer (torch 2.13) it keeps the process group
        alive after destroy_process_group, and a gloo group still alive when the interpreter shuts
        down aborts the process now and then (its worker thread frees Python-owned tensors
        without the GIL). DDP would overlap the all-reduce with backward; for these small models
        it is one short message per step.
        """
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over ranks (float64): one collective."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order."""
        if self.world == 1:
            return [obj]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def check_ranks_agree(self, model: torch.nn.Module) -> None:
        """Raises unless every rank ends with the same parameters (a sum of all of them, compared)."""
        if self.world == 1:
            return
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        low, high = total.clone(), total.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if low.item() != high.item():
            raise RuntimeError(
                f"train: the ranks' parameters differ after training (sums {low.item()} to {high.item()})"
            )

    def close(self) -> None:
        """Destroys the process group after a successful run, while the interpreter is alive: a
        gloo group left to interpreter shutdown now and then aborts both ranks ("terminate called
        without an active exception"). This frees it only because nothing else holds it (see
        __init__ and average_gradients). Also after a stop or a divergence, which every rank meets at
        the same step; not when a rank raises an error of its own: the others may wait in a
        collective that never completes, and the launcher ends them anyway."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
