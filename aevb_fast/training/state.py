"""Where a training run is: its counters, the order of its minibatches and its random streams.
With the model and the optimizer, this is what a checkpoint holds, so that a resumed run goes on
bit for bit as if it had never stopped."""

from __future__ import annotations

import torch

from .distributed import DistributedContext


def seed_default_generators(seed: int, device: torch.device) -> None:
    """torch.manual_seed for the default generators a run draws from: the CPU's and, on CUDA, its
    own GPU's (not every GPU's: train() gives back to its caller the state of each it touched)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


class TrainState:
    """Counters (optimizer steps, samples seen, training wall time), the epoch's permutation of
    the training points and the cursor into it, and the random streams: the minibatch order is
    shared by all ranks; the binarization and the kernel noise (torch's default generator) differ
    per rank. Made after the model, whose initial parameters come from seed_default_generators(seed)."""

    def __init__(self, seed: int, train_points: int, dist: DistributedContext):
        self.dist = dist
        self.step, self.samples_seen, self.cursor, self.train_wall = 0, 0, 0, 0.0
        self.wall = 0.0  # seconds since the first step, evaluations and checkpoints included
        self.shuffle = torch.Generator().manual_seed(seed)
        self.binarize_rng = torch.Generator(device=dist.device).manual_seed(seed * 1009 + 1 + dist.rank)
        seed_default_generators(seed * 1009 + 2 + dist.rank, dist.device)
        self.order = torch.randperm(train_points, generator=self.shuffle)

    def advance_cursor(self, batch: int) -> bool:
        """Moves the cursor past the next minibatch of `batch` points, drawing the next epoch's
        permutation first when this one has fewer left; returns whether it did (the minibatch then
        starts at 0). The cursor before the call is where the minibatch starts otherwise."""
        reshuffled = self.cursor + batch > len(self.order)
        if reshuffled:
            self.order = torch.randperm(len(self.order), generator=self.shuffle)
            self.cursor = 0
        self.cursor += batch
        return reshuffled

    def next_indices(self, batch_size: int) -> torch.Tensor:
        """This rank's shard of the next global minibatch (epochs of a random permutation)."""
        batch = min(batch_size, len(self.order))
        self.advance_cursor(batch)
        indices = self.order[self.cursor - batch : self.cursor]
        return self.dist.shard(indices).to(self.dist.device)

    def advance(self, batch_size: int) -> None:
        self.step += 1
        self.samples_seen += batch_size

    def rng_state(self) -> dict:
        """This rank's random streams, as they are now."""
        device = self.dist.device
        return {
            "binarize": self.binarize_rng.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }

    def state_dict(self) -> dict:
        """The checkpoint's share of the state; every rank's random streams (a collective call)."""
        return {
            "step": self.step,
            "samples_seen": self.samples_seen,
            "cursor": self.cursor,
            "order": self.order,
            "shuffle": self.shuffle.get_state(),
            "rng": self.dist.gather(self.rng_state()),
            "world": self.dist.world,
            "train_wall": self.train_wall,
            "wall": self.wall,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples_seen, self.cursor = state["step"], state["samples_seen"], state["cursor"]
        self.order, self.train_wall = state["order"], state["train_wall"]
        self.wall = state.get("wall", self.train_wall)  # checkpoints before 2026-12-04 kept no wall time
        self.shuffle.set_state(state["shuffle"])
        self.set_rng_state(state["rng"][self.dist.rank])

    def set_rng_state(self, rng: dict) -> None:
        """Puts back this rank's random streams as ``rng_state`` returned them."""
        self.binarize_rng.set_state(rng["binarize"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"], self.dist.device)
