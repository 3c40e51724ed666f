"""The trainer's policy on its options, beside the config they govern: which options name a run's
default directory, and which a resumed run may change (one rule for the command line's --resume
and Python's ``train(config, resume=True)``). The command line (``aevb_fast.cli``) only parses and
calls these."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from .config import TrainConfig

# Options that change what is trained, named in the default run directory when given (with the
# prefix shown), so that a second experiment never collides with the first.
NAMED_OPTIONS = {
    "likelihood": "",
    "algorithm": "",
    "estimator": "",
    "num_samples": "L",
    "optimizer": "",
    "lr": "lr",
    "lr_scaling": "scale-",
    "warmup": "warmup",
    "lr_decay": "",
    "final_lr": "final",
    "decay_fraction": "decay",
    "clip_grad_norm": "clip",
    "weight_decay": "wd",
    "kl_warmup": "klwarmup",
    "free_bits": "freebits",
    "depth": "depth",
    "init_std": "init",
    "binarize": "",
    "backend": "",
    "test_fraction": "test",
}

# Options that a resumed run may take although they differ from its checkpoint's.
RESUME_MAY_CHANGE = ("samples", "device", "plots", "eval_every", "fused_head", "data_dir", "cuda_graph")


def short_count(n: int) -> str:
    """1000000 -> 1e6, 2500000 -> 25e5, 1234 -> 1234: exact, so that names never collide."""
    zeros = len(str(n)) - len(str(n).rstrip("0")) if n else 0
    return f"{n // 10**zeros}e{zeros}" if zeros >= 3 else str(n)


def default_run_dir(given: dict) -> str:
    """runs/<dataset>-j<J>-h<H>-b<M>-n<samples>-s<seed>, then each option of NAMED_OPTIONS that was
    given (e.g. -gaussian-adagrad-lr0.128): runs of different settings never collide. `given`
    holds the options the user gave (TrainConfig's field names)."""
    value = {
        k: given[k] if given.get(k) is not None else getattr(TrainConfig, k)
        for k in ("dataset", "latent", "hidden", "batch_size", "samples", "seed")
    }
    dataset = Path(value["dataset"]).stem if Path(value["dataset"]).suffix else value["dataset"]
    name = (
        f"runs/{dataset}-j{value['latent']}-h{value['hidden']}-b{value['batch_size']}"
        f"-n{short_count(value['samples'])}-s{value['seed']}"
    )
    for key, prefix in NAMED_OPTIONS.items():
        shown = given.get(key)
        if shown is not None:
            shown = (
                short_count(shown) if isinstance(shown, int) else f"{shown:g}" if isinstance(shown, float) else shown
            )
            name += f"-{prefix}{shown}"
    return name


def resume_command(out: str, processes: int | None = None, threads: int = 0) -> str:
    """The command that continues the run in `out` as it ran: as many processes (each has its own
    random streams; None: this run's own, from torchrun's environment) and, where given, the same
    threads (resume is bit for bit on the same count)."""
    per_node = processes
    if processes is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    if processes == 1:
        command = "aevb-fast"
    elif per_node == processes:
        command = f"torchrun --nproc-per-node {processes} -m aevb_fast.cli"
    else:  # several machines: the user adds their rendezvous options
        command = f"torchrun --nnodes {processes // per_node} --nproc-per-node {per_node} ... -m aevb_fast.cli"
    return f"{command} train --resume --out {out}" + (f" --threads {threads}" if threads else "")


# The command line's switches of the options that are on by default: --no-plots, not --plots.
_NEGATED_FLAGS = ("plots", "fused_head", "cuda_graph")


def _option(key: str, cli: bool) -> str:
    """An option as the user names it: --batch-size on the command line, batch_size in Python."""
    if not cli:
        return key
    return ("--no-" if key in _NEGATED_FLAGS else "--") + key.replace("_", "-")


def _same_value(key: str, given, run_value) -> bool:
    """Whether an option keeps the run's value; a data file named by another path to it does."""
    if key in ("dataset", "test_data") and isinstance(given, str) and isinstance(run_value, str):
        if Path(given).suffix:
            return Path(given).resolve() == Path(run_value).resolve()
    return given == run_value


def check_resume_options(run: TrainConfig, given: dict, *, cli: bool) -> None:
    """The rule of a resume, from the command line (``cli``) or from Python: a resumed run keeps
    its options, but for RESUME_MAY_CHANGE. A ValueError names each option of ``given`` (TrainConfig
    field names) that differs from the run's config ``run``, with both values; ``out`` (where the
    run is now) never conflicts."""
    shown = str if cli else repr

    def conflict(key, value):
        had = getattr(run, key)
        had = f"the run has {shown(had)}" if had is not None else "the run was started without it"
        return (f"{_option(key, cli)} {value}" if cli else f"{key}={value!r}") + f" ({had})"

    conflicts = [
        conflict(k, v)
        for k, v in given.items()
        if k not in RESUME_MAY_CHANGE and k != "out" and not _same_value(k, v, getattr(run, k))
    ]
    if conflicts:
        resume, out = ("--resume", "--out") if cli else ("train: resume=True", "out")
        raise ValueError(
            f"{resume}: {', '.join(conflicts)}: a resumed run keeps its options; only "
            f"{', '.join(_option(k, cli) for k in RESUME_MAY_CHANGE)} may change "
            f"(or start a new run with another {out})"
        )


def finished_notice(out: str, samples_seen: int, samples: int, *, cli: bool) -> str:
    """What a resume of a run that has seen its samples already says: it trains nothing."""
    if samples_seen == samples:
        seen = f"{samples_seen} of {samples} samples"
    else:
        seen = f"{samples_seen} samples seen, {samples} asked for"
    return f"the run in {out} is finished ({seen}); nothing to do (raise {_option('samples', cli)} to train further)"


def resume_options(
    run: TrainConfig, given: dict, *, cli: bool, note: Callable[[str], None] | None = None
) -> TrainConfig:
    """The run's config ``run`` with the options of ``given`` that may change applied (each change
    said through ``note``); the others must keep the run's values (``check_resume_options``)."""
    check_resume_options(run, given, cli=cli)
    config = dataclasses.replace(run)
    for key in RESUME_MAY_CHANGE:
        if key in given and given[key] != getattr(config, key):
            if note is not None:
                note(f"--resume: {key} changed from {getattr(config, key)} to {given[key]}")
            setattr(config, key, given[key])
    return config


def resumed_config(out: str, given: dict, note: Callable[[str], None]) -> tuple[TrainConfig, int]:
    """The config of the run in `out`, with the options of `given` that may change applied (each
    change said through `note`), and the samples it has seen; a ValueError names the options that
    conflict with the checkpoint's (``check_resume_options``)."""
    from .checkpoint import RunDirectory, config_from_state

    state = RunDirectory(out).load()
    config = config_from_state(state)
    config.out = out  # where the run is now (it may have been copied or moved since it began)
    return resume_options(config, given, cli=True, note=note), state["samples_seen"]
