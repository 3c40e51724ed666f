"""A run directory: its checkpoint (written atomically), its metrics log, and the rules that keep a
finished run from being overwritten by accident.

A checkpoint holds the resolved ``TrainConfig``, the model's and optimizer's state, the position in
the data and every random stream (per rank), and what ``eval`` and ``plot`` need to rebuild the
model and find the data again (``model_spec``, ``data_spec``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from ..models import VAE
from .config import TrainConfig

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
EVALS = "eval.jsonl"  # every `aevb-fast eval` result, one line each, appended
# Everything a run writes (eval.json: where eval wrote before eval.jsonl): what --overwrite removes.
RUN_FILES = (
    CHECKPOINT,
    METRICS,
    EVALS,
    "eval.json",
    "learning_curve.png",
    "reconstructions.png",
    "prior_samples.png",
    "manifold.png",
    "checkpoint.pt.tmp",
    "metrics.jsonl.tmp",
)
# What a run that stopped before its first checkpoint can leave (pictures come at the end, eval
# results need a checkpoint): a folder of only these is replaced without --overwrite.
LEFTOVERS = (METRICS, "metrics.jsonl.tmp", "checkpoint.pt.tmp")


class RunError(ValueError):
    """A user error about a run directory (exists, missing, cannot be rebuilt): one line."""


class RunExists(RunError):
    """``--out`` holds a run, or files that are not a run's: ``str()`` names the Python API's
    arguments (resume=True, overwrite=True), ``message(cli=True)`` the command line's."""

    def __init__(self, path: Path, holds_run: bool, names: list[str] = ()):
        self.path, self.holds_run, self.names = path, holds_run, list(names)
        super().__init__(self.message(cli=False))

    def message(self, cli: bool) -> str:
        resume, overwrite, out = (
            ("--resume", "--overwrite", "--out") if cli else ("resume=True", "overwrite=True", "out")
        )
        add = "add" if cli else "pass"
        if self.holds_run:
            return (
                f"{self.path} already holds a run; {add} {resume} to continue it, {overwrite} to replace "
                f"it, or choose another {out}"
            )
        shown = ", ".join(self.names[:3]) + (f" and {len(self.names) - 3} more" if len(self.names) > 3 else "")
        return (
            f"{self.path} is not empty and holds no run (it has {shown}); choose another {out}, or {add} "
            f"{overwrite} to write the run into it (files named as a run's, such as {METRICS}, are replaced)"
        )


def read_metrics(run: str | os.PathLike) -> list[dict]:
    path = Path(run) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


class RunDirectory:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoint = self.path / CHECKPOINT
        self.metrics = self.path / METRICS

    def holds_run(self) -> bool:
        """Whether a run worth keeping is here: one with a checkpoint. A run that stopped before
        its first checkpoint (a divergence in its first evaluations) can be neither resumed nor
        evaluated, so a new run replaces its metrics without --overwrite."""
        return self.checkpoint.is_file()

    def stopped_before_checkpoint(self) -> bool:
        """Whether the folder holds only what a run that stopped before its first checkpoint left
        (a divergence in its first evaluations): a trainer's metrics.jsonl and its temporary files.
        Eval results and pictures are never such leftovers (a folder whose checkpoint was moved
        away keeps them: it is refused, not cleared)."""
        names = {p.name for p in self.path.iterdir()}
        if not names <= set(LEFTOVERS) or METRICS not in names:
            return False
        try:
            return all({"samples_seen", "train_elbo", "test_elbo"} <= set(r) for r in read_metrics(self.path))
        except (ValueError, TypeError):  # not JSON lines, or not objects: not the trainer's
            return False

    def refuse_existing(self, overwrite: bool) -> None:
        """A new run may not replace a run already here, nor write into a folder of other files
        (a run's leftovers from before its first checkpoint excepted), unless ``overwrite``."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file; the run directory must be a folder")
        if overwrite or not self.path.is_dir():
            return
        if self.holds_run():
            raise RunExists(self.path, holds_run=True)
        names = sorted(p.name for p in self.path.iterdir())
        if names and not self.stopped_before_checkpoint():
            raise RunExists(self.path, holds_run=False, names=names)

    def clear(self) -> None:
        """Removes a replaced run's files (called once the new run has its data and model, so that
        a bad data file or option loses nothing)."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)

    def save(self, state: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint)  # atomic: the old checkpoint stays until this

    def load(self, device: torch.device | str = "cpu") -> dict:
        if not self.checkpoint.is_file():
            raise RunError(f"{self.path} holds no checkpoint ({CHECKPOINT}); nothing to resume or evaluate")
        try:
            return torch.load(self.checkpoint, map_location=device, weights_only=False)
        except Exception as error:  # a damaged file: one line, naming it
            raise RunError(f"cannot read {self.checkpoint}: {error}") from None

    def append_metrics(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def drop_metrics_after(self, samples_seen: int) -> None:
        """A run killed between an evaluation's log line and its checkpoint logged a point that
        the resumed run will log again: drop log lines past the checkpoint."""
        if not self.metrics.is_file():
            return
        lines = [line for line in self.metrics.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["samples_seen"] <= samples_seen]
        if len(kept) < len(lines):
            tmp = self.metrics.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.metrics)


def resolve_run(path: str | os.PathLike) -> RunDirectory:
    """A run directory from a run directory or its checkpoint file (what ``eval`` and ``plot``
    take); a one-line error if it is neither."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        run = RunDirectory(path.parent)
        run.checkpoint = path
        return run
    if path.is_dir():
        return RunDirectory(path)
    raise RunError(
        f"{path} is neither a run directory nor a checkpoint file" + ("" if path.exists() else " (it does not exist)")
    )


def config_from_state(state: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in state["config"].items() if k in known})


def paper_model_spec(event_shape: tuple[int, ...], likelihood: str, shape: dict | None = None) -> dict:
    """What rebuilds the paper's MLPs besides the config: the data's event shape, the likelihood
    and, for one that VAE.paper built in Python, its ``hidden``, ``latent`` and ``depth`` (the config's
    otherwise)."""
    return {"kind": "paper", "event_shape": list(event_shape), "likelihood": likelihood, **(shape or {})}


def build_model(state: dict, device: torch.device | str = "cpu") -> VAE:
    """The trained model of a checkpoint: the paper's MLPs are rebuilt from the config; a model
    the user gave train() in Python cannot be, and the error says how to load it instead."""
    config = config_from_state(state)
    spec = model_spec(state)
    if spec["kind"] != "paper":
        raise RunError(
            f"the run was trained with the user's own model ({spec['class']}), which the command "
            "line cannot rebuild: build it in Python and load torch.load(checkpoint)['model'] into it"
        )
    model = VAE.paper(
        math.prod(spec["event_shape"]),
        spec.get("hidden", config.hidden),
        spec.get("latent", config.latent),
        spec["likelihood"],
        spec.get("depth", config.depth),
        config.init_std,
    )
    model.load_state_dict(state["model"])
    return model.to(device)


def model_spec(state: dict) -> dict:
    """How a checkpoint's model is rebuilt (``kind`` "paper"), or what it was (``kind`` "custom")."""
    if state.get("model_spec"):
        return state["model_spec"]
    # Checkpoints written before model_spec existed held only the paper's models.
    config = config_from_state(state)
    data_dim = state["model"]["encoder.net.0.weight"].shape[1]
    likelihood = config.likelihood or ("gaussian" if config.dataset == "frey" else "bernoulli")
    return {"kind": "paper", "event_shape": [data_dim], "likelihood": likelihood}


def load_checkpoint(
    path: str | os.PathLike, device: str = "cpu", model: nn.Module | None = None
) -> tuple[TrainConfig, nn.Module]:
    """The config and model of a checkpoint (or run directory) written by the trainer. The paper's
    MLPs (built from the config, or by VAE.paper in Python) are rebuilt; a model of your own is
    not: pass one like it as ``model``, and the checkpoint's weights are loaded into it."""
    state = resolve_run(path).load(device)
    config = config_from_state(state)
    if model is not None:
        model.load_state_dict(state["model"])
        return config, model.to(device)
    spec = model_spec(state)
    if spec["kind"] != "paper":
        raise RunError(
            f"{path} holds a model of your own ({spec['class']}), which cannot be rebuilt from the checkpoint: "
            "pass one like it, load_checkpoint(path, model=...), and its weights are loaded into it"
        )
    return config, build_model(state, device)
