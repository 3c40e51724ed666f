"""One optimizer step of a training run: the minibatch, the loss's gradients (averaged over ranks,
clipped), the learning rate and the optimizer. The loop around it (evaluations, checkpoints,
signals, progress) is ``trainer.Trainer``'s.

On CUDA the step reads its minibatch, learning rate and KL weight from device tensors
(``DeviceStepInputs``) and is, by default, replayed as one CUDA graph (``CapturedStep``); elsewhere
the host hands it those values, unless asked otherwise (``device_state``).
"""

from __future__ import annotations

import sys

import torch

from . import data as datasets
from .config import TrainConfig
from .device_step import CapturedStep, DeviceStepInputs
from .distributed import DistributedContext
from .objective import ELBOObjective
from .state import TrainState


class TrainStep:
    """Called, takes one optimizer step of the run and returns the minibatch's bound (before the
    step), on the device; ``self.optimizer`` is the run's optimizer."""

    def __init__(
        self,
        config: TrainConfig,
        objective: ELBOObjective,
        data: datasets.Data,
        state: TrainState,
        dist: DistributedContext,
        *,
        optimizer_state: dict | None = None,
        device_state: bool | None = None,
    ):
        """``optimizer_state``: a checkpoint's, to resume from. ``device_state``: whether each step
        reads its inputs from device tensors (None: on CUDA, where that lets ``config.cuda_graph``
        replay the step as one CUDA graph); ``state`` is where the run is, restored already."""
        self.config, self.data, self.state, self.dist = config, data, state, dist
        self.model = objective.model
        self.loss = torch.compile(objective) if config.compile else objective
        on_cuda = dist.device.type == "cuda"
        device_state = on_cuda if device_state is None else device_state
        decay = config.weight_decay if config.weight_decay is not None else 1.0 / len(data.train)
        # Adam keeps its step count on the device when the step is captured.
        options = {"capturable": True} if config.optimizer == "adam" and device_state and on_cuda else {}
        optimizer = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam}[config.optimizer]
        self.optimizer = optimizer(self.model.parameters(), lr=config.learning_rate(0), weight_decay=decay, **options)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)

        self.device_inputs = DeviceStepInputs(config, state, dist.device) if device_state else None
        if self.device_inputs is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self.device_inputs.lr
        self.captured = None
        if self.device_inputs is not None and on_cuda and config.cuda_graph:
            if dist.world > 1:
                if dist.is_main:
                    print(
                        "train: with several processes every step runs eagerly (the gradients' all-reduce "
                        "is not captured in a CUDA graph)",
                        file=sys.stderr,
                    )
            else:
                self.captured = CapturedStep(self._device_step, generators=(state.binarize_rng,))

    def __call__(self) -> torch.Tensor:
        config = self.config
        if self.device_inputs is not None:
            self.device_inputs.before_step()
            bound = self.captured() if self.captured is not None else self._device_step()
        else:
            x = self.data.batch(self.state.next_indices(config.batch_size), self.state.binarize_rng)
            bound = self._forward_backward(x, config.kl_weight(self.state.samples_seen))
            for group in self.optimizer.param_groups:
                group["lr"] = config.learning_rate(self.state.step)
            self.optimizer.step()
        self.state.advance(config.batch_size)
        return bound

    def optimizer_state_dict(self) -> dict:
        """The optimizer's state for a checkpoint: a rate read on the device saved as a number."""
        optimizer = self.optimizer.state_dict()
        for group in optimizer["param_groups"]:
            group["lr"] = float(group["lr"])
        return optimizer

    def _device_step(self) -> torch.Tensor:
        """The step with its inputs on the device: nothing in it reads a value from the host, so it
        can be captured as a CUDA graph (CapturedStep)."""
        inputs = self.device_inputs
        x = self.data.batch(inputs.indices(), self.state.binarize_rng)
        bound = self._forward_backward(x, inputs.kl_weight())
        inputs.set_learning_rate()
        self.optimizer.step()
        inputs.after_step()
        return bound

    def _forward_backward(self, x: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
        """The loss's gradients on minibatch x, averaged over ranks and clipped; returns its bound."""
        config = self.config
        # No cast cache: a captured step's cached casts would be freed inside its graph (torch's
        # advice for autocast under CUDA graphs); each weight is cast once a step anyway.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.bf16, cache_enabled=False):
            loss, bound = self.loss(
                x,
                num_samples=config.num_samples,
                estimator=config.estimator,
                beta=beta,
                free_bits=config.free_bits,
                backend=config.backend,
                fused_head=config.fused_head,
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients(list(self.model.parameters()))
        if config.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_grad_norm)
        return bound.detach()
