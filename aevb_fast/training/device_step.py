"""The training step with its inputs on the device, so that one CUDA graph can replay it whole
(issue 31), and the graph that does.

``DeviceStepInputs``: what a step reads besides the model and the optimizer, kept in device
tensors and advanced by the step itself: the minibatch's indices (the epoch's permutation read at a
cursor), the learning rate and the KL weight (tables made once from the config's own schedule,
indexed by a step counter). A replay then needs no value from the host. The host keeps its own
counters (``TrainState``) in step, and between steps refills the permutation when an epoch ends,
as ``TrainState.next_indices`` would have drawn it: the same minibatches, rates and weights as the
host-driven step, so a run goes on bit for bit whichever drove it.

``CapturedStep``: the step captured once as a CUDA graph and replayed; a step that cannot be
captured (a model that synchronises, say) falls back to running eagerly, with a one-line notice.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable

import torch
from torch import Tensor

from .config import TrainConfig
from .state import TrainState


class DeviceStepInputs:
    """The minibatch indices, learning rate and KL weight of each step, on ``device``."""

    def __init__(self, config: TrainConfig, state: TrainState, device: torch.device):
        # Every step the run can take (a resumed run may have taken more than its samples now ask).
        steps = max(math.ceil(config.samples / config.batch_size), state.step) + 1
        self.config, self.state, self.device = config, state, device
        self.batch = min(config.batch_size, len(state.order))
        # The host's float64 values exactly (the optimizer reads the rate as a tensor; the ELBO
        # multiplies the KL by the weight in float32, as it does a Python float).
        self.learning_rates = torch.tensor([config.learning_rate(s) for s in range(steps)], dtype=torch.float64)
        self.kl_weights = torch.tensor([config.kl_weight(s * config.batch_size) for s in range(steps)])
        self.learning_rates, self.kl_weights = self.learning_rates.to(device), self.kl_weights.to(device)
        self.step = torch.tensor(state.step, device=device)
        self.order = state.order.to(device)
        self.cursor = torch.tensor(state.cursor, device=device)
        self.offsets = state.dist.shard(torch.arange(self.batch)).to(device)  # this rank's share
        self.lr = torch.empty((), dtype=torch.float64, device=device)  # what the optimizer reads

    def before_step(self) -> None:
        """The host's share of a step, outside any graph: its cursor and, at an epoch's end, the
        next permutation copied to the device (the same one TrainState draws)."""
        if self.state.advance_cursor(self.batch):
            source = self.state.order
            if self.order.is_cuda:  # from pinned memory, so the copy does not wait for the steps in flight
                source = source.pin_memory()
            self.order.copy_(source, non_blocking=self.order.is_cuda)
            self.cursor.zero_()

    def indices(self) -> Tensor:
        """This rank's indices of the step's minibatch; moves the cursor on (on the device)."""
        indices = self.order.index_select(0, self.cursor + self.offsets)
        self.cursor.add_(self.batch)
        return indices

    def kl_weight(self) -> Tensor:
        return self.kl_weights[self.step]

    def set_learning_rate(self) -> None:
        self.lr.copy_(self.learning_rates[self.step])

    def after_step(self) -> None:
        self.step.add_(1)


class CapturedStep:
    """``step()`` captured as one CUDA graph after ``warmup`` eager calls, then replayed; each call
    returns a copy of the step's output. ``generators``: the random streams besides the default
    one that the step draws from (registered with the graph, so a replay draws afresh from each as
    an eager call would)."""

    def __init__(self, step: Callable[[], Tensor], generators: tuple[torch.Generator, ...] = (), warmup: int = 3):
        self.step, self.generators, self.warmup = step, generators, warmup
        self.calls, self.graph, self.output = 0, None, None
        self.eager = False  # set when the capture failed: every call runs the step eagerly

    def __call__(self) -> Tensor:
        self.calls += 1
        if self.eager or self.calls <= self.warmup:
            return self.step()
        if self.graph is None:
            self._capture()
            if self.eager:
                return self.step()
        self.graph.replay()
        return self.output.clone()

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        torch.cuda.synchronize()
        try:
            with torch.cuda.graph(graph):
                output = self.step()
        except RuntimeError as error:  # something in the step synchronised with the host
            reason = str(error).strip().splitlines()[0][:200]
            try:  # let the failed capture's error surface here, not in the next eager kernel
                torch.cuda.synchronize()
            except RuntimeError:
                pass
            print(
                f"train: the step could not be captured as a CUDA graph ({reason}); it runs eagerly "
                "(--no-cuda-graph skips the attempt)",
                file=sys.stderr,
            )
            self.eager = True
            return
        self.graph, self.output = graph, output
