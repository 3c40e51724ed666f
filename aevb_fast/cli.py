"""The `aevb-fast` command (also `python -m aevb_fast.cli`): parses arguments, calls the layers."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _int_list(text: str) -> list[int]:
    try:
        return [int(float(v)) for v in text.split(",") if v]
    except (ValueError, OverflowError):  # 'abc', 'inf'
        raise argparse.ArgumentTypeError(f"expected comma-separated integers (4096,65536), got {text!r}") from None


def cmd_info(args) -> int:
    import aevb_fast as af

    print(json.dumps(af.build_info(), indent=2))
    return 0


def _devices(text: str) -> list[str]:
    """'all': the CPU and, when torch sees one, the GPU; else a comma-separated list."""
    if text == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return text.split(",")


# The options each suite reads, beyond --sizes, --repeats, --threads, --device, --save and --out:
# one given to a suite that does not read it is refused, never ignored.
_SUITE_READS = {
    "the op suite": {"--ops", "--dtype", "--modes", "--min-time", "--latent", "--data", "-L", "--fresh-pages"},
    "--train": {"--hidden", "--train-latent", "--no-memory"},
    "--head": {"--data", "-L", "--hidden", "--fresh-pages"},
}


def _options_not_read(args) -> str | None:
    suite = "--train" if args.train else "--head" if args.head else "the op suite"
    own = set().union(*_SUITE_READS.values()) - _SUITE_READS[suite]
    unread = [
        flag for flag, (name, default) in args.bench_defaults.items() if flag in own and getattr(args, name) != default
    ]
    return f"{suite} does not take {', '.join(unread)}" if unread else None


def cmd_bench(args) -> int:
    from .bench import op_suite as bench

    if not (args.train and args.head) and (unread := _options_not_read(args)):
        return _fail("bench", unread)
    if args.threads < 0:
        return _fail("bench", f"--threads must be at least 1 (or 0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    for flag, values in (
        ("--sizes", args.sizes or []),
        ("--data", [args.data]),
        ("--latent", [args.latent]),
        ("-L", args.samples),
        ("--repeats", [args.repeats]),
    ):
        if min(values, default=1) < 1:
            return _fail("bench", f"{flag} must be at least 1, got {','.join(str(v) for v in values)}")
    args.ops = args.ops or list(bench.DEFAULT_OPS)
    for given, known, flag in (
        (args.ops, bench.OPS, "--ops"),
        (args.modes, bench.MODES, "--modes"),
        (args.dtype or [], DTYPES, "--dtype"),
    ):
        unknown = sorted(set(given) - set(known))
        if unknown:
            print(f"aevb-fast bench: unknown {flag} {unknown}; choose from {sorted(known)}", file=sys.stderr)
            return 2
    devices = _devices(args.device)
    for device in devices:
        if device != "cpu" and not device.startswith("cuda"):
            print(f"aevb-fast bench: --device must be cpu, cuda or all, got {device!r}", file=sys.stderr)
            return 2
        if device.startswith("cuda") and not torch.cuda.is_available():
            print("aevb-fast bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
    if args.train and args.head:
        print("aevb-fast bench: --train and --head are two suites; choose one", file=sys.stderr)
        return 2
    if args.matmul != "float32" and not args.train:
        print(
            "aevb-fast bench: --matmul is an option of --train (the training step's matrix products)", file=sys.stderr
        )
        return 2
    if args.matmul == "tf32" and any(not d.startswith("cuda") for d in devices):
        print("aevb-fast bench: --matmul tf32 is for CUDA devices (a CPU has no TF32)", file=sys.stderr)
        return 2
    if args.train:
        return _bench_train(args, devices)
    if args.head:
        return _bench_head(args, devices)
    # Freed memory is kept on the CPU unless --fresh-pages (see bench.keep_freed_memory).
    allocator = "glibc default"
    if "cpu" in devices and not args.fresh_pages and bench.keep_freed_memory():
        allocator = "freed memory kept (mallopt)"
    for device in devices:
        dtypes = [DTYPES[d] for d in args.dtype] if args.dtype else bench.default_dtypes(device)
        sizes = args.sizes or ([100, 4096, 65536, 1048576] if device.startswith("cuda") else [100, 4096, 65536])
        print(
            f"aevb-fast bench: {device} ({bench.device_name(device)}), {torch.get_num_threads()} threads, "
            f"{','.join(str(d).removeprefix('torch.') for d in dtypes)}, D={args.data}, J={args.latent}, "
            f"L={','.join(map(str, args.samples))}, {','.join(args.modes)}, median of {args.repeats}"
            + ("" if device.startswith("cuda") else f", CPU allocator: {allocator}")
        )
        saver = _RowSaver.for_args(args, bench.results_path(device))
        if saver and not saver.check():
            return 2
        rows = _measured(
            lambda on_row: bench.run(
                args.ops,
                sizes,
                args.data,
                args.latent,
                dtypes,
                device,
                args.repeats,
                args.min_time,
                tuple(args.modes),
                tuple(args.samples),
                allocator,
                on_row=on_row,
            ),
            bench.format_table,
            saver,
        )
        print(bench.format_table(rows))
        print("speed-ups are ratios of medians measured side by side in this run (higher is better)")
        if saver:
            saver.report()
    return 0


def _bench_train(args, devices: list[str]) -> int:
    from .bench import op_suite as bench
    from .bench import train_step as bench_train

    for device in devices:
        sizes = args.sizes or ([100, 4096, 65536] if device.startswith("cuda") else [100, 4096, 16384])
        print(
            f"aevb-fast bench --train: {device} ({bench.device_name(device)}), {torch.get_num_threads()} threads, "
            f"MNIST model D=784, H={args.hidden}, J={args.train_latent}, median of {args.repeats}"
        )
        saver = _RowSaver.for_args(args, bench.results_path(device).with_name("train.jsonl"))
        if saver and not saver.check():
            return 2
        rows = _measured(
            lambda on_row: bench_train.run(
                sizes,
                device,
                args.repeats,
                hidden=args.hidden,
                latent=args.train_latent,
                memory=not args.no_memory,
                matmul=args.matmul,
                on_row=on_row,
            ),
            bench_train.format_table,
            saver,
        )
        print(bench_train.format_table(rows))
        if saver:
            saver.report()
    return 0


def _bench_head(args, devices: list[str]) -> int:
    from .bench import head_suite
    from .bench import op_suite as bench

    for device in devices:
        sizes = args.sizes or [65536]
        print(
            f"aevb-fast bench --head: {device} ({bench.device_name(device)}), {torch.get_num_threads()} threads, "
            f"linear_bernoulli_log_prob, D={args.data}, H={args.hidden}, L={','.join(map(str, args.samples))}, "
            f"float32, median of {args.repeats}; peak memory as aevb_fast/bench/memory.py says"
        )
        if device == "cpu" and not args.fresh_pages:
            bench.keep_freed_memory()
        saver = _RowSaver.for_args(args, bench.results_path(device).with_name("head.jsonl"))
        if saver and not saver.check():
            return 2
        rows = _measured(
            lambda on_row: head_suite.run(
                sizes, args.samples, device, args.repeats, data=args.data, hidden=args.hidden, on_row=on_row
            ),
            head_suite.format_table,
            saver,
        )
        print(head_suite.format_table(rows))
        if saver:
            saver.report()
    return 0


def _measured(run, format_table, saver: "_RowSaver | None") -> list[dict]:
    """``run(on_row)``, each row saved as it comes; on Ctrl-C, the table of the rows measured so
    far is printed before the interrupt goes on (minutes of timing are not lost to the screen)."""
    from .bench.harness import row_key

    measured: dict[str, dict] = {}  # by case: a head row comes twice, the second with its profile

    def on_row(row: dict) -> None:
        measured[row_key(row)] = row
        if saver:
            saver(row)

    try:
        return run(on_row)
    except KeyboardInterrupt:
        if measured:
            print(format_table(list(measured.values())))
            print(f"(interrupted: the {len(measured)} rows measured before Ctrl-C)")
        raise


class _RowSaver:
    """Upserts each measured row into a results file as soon as it exists, so that a run cut
    short (a timeout, Ctrl-C) keeps what it measured."""

    def __init__(self, path: Path):
        self.path, self.added, self.replaced = path, 0, 0
        self.saved: set[str] = set()  # rows saved before in this run (a head row is saved twice)

    @classmethod
    def for_args(cls, args, default: Path) -> "_RowSaver | None":
        return cls(Path(args.out) if args.out else default) if args.save or args.out else None

    def check(self) -> bool:
        """Whether the file can take rows: a corrupt one is a one-line error before any timing
        (and is left as it was)."""
        from .bench.harness import read_rows

        try:
            read_rows(self.path)
        except ValueError as error:
            print(f"aevb-fast bench: {error}", file=sys.stderr)
            return False
        # Writable, before any timing: else the run would time its first case and then fail.
        probe = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe.touch()
            probe.unlink()
        except OSError as error:
            print(
                f"aevb-fast bench: cannot write the results into {self.path} ({error}); pass --out FILE",
                file=sys.stderr,
            )
            return False
        return True

    def __call__(self, row: dict) -> None:
        from .bench.harness import row_key, upsert

        replaced, added = upsert([row], self.path)
        key = row_key(row)
        if key in self.saved:  # this run's own row again (with more in it): neither added nor replaced
            return
        self.saved.add(key)
        self.replaced += replaced
        self.added += added

    def report(self) -> None:
        print(
            f"{self.path}: {self.added} rows added, {self.replaced} replaced (same case, device, threads, repeats and versions)"
        )


def _count(text: str) -> int:
    """A count written as 3e6 or 3000000."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number such as 3e6, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a non-negative whole number, got {text!r}")
    return int(value)


def _fail(command: str, message: str, code: int = 2) -> int:
    """A user error: one line on stderr, a non-zero exit."""
    print(f"aevb-fast {command}: {str(message).removeprefix('train: ')}", file=sys.stderr)
    return code


def _note(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"aevb-fast train: {message}", file=sys.stderr)


def cmd_train(args) -> int:
    try:
        return _train(args)
    except KeyboardInterrupt:  # before the trainer's own handler is in place (imports, data) or after it
        from .training.options import resume_command

        out = Path(args.out) if args.out else None
        if out is not None and (out / "checkpoint.pt").is_file():
            print(
                f"\naevb-fast train: interrupted (Ctrl-C); {out} holds the run's last checkpoint (continue it "
                f"with: {resume_command(str(out), threads=args.threads)}; a finished one: aevb-fast plot {out})",
                file=sys.stderr,
            )
        else:
            print("\naevb-fast train: interrupted (Ctrl-C) before training started; no run was saved", file=sys.stderr)
        return 130


def _train(args) -> int:
    import warnings

    from .training import RunError, TooShortToJudge, TrainConfig, TrainingDiverged, TrainingStopped, train
    from .training.checkpoint import RunExists
    from .training.options import default_run_dir, finished_notice, resume_command, resumed_config

    # Every option defaults to None: what is not None here is what the user gave.
    fields = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if getattr(args, f, None) is not None}
    for key in ("dataset", "test_data"):  # a data file is stored by its absolute path (eval, plot, resume)
        if key in fields and Path(fields[key]).suffix:
            fields[key] = str(Path(fields[key]).resolve())
    out_given = args.out is not None
    args.out = args.out or default_run_dir(fields)
    fields["out"] = args.out
    if args.resume and not out_given and not (Path(args.out) / "checkpoint.pt").is_file():
        return _fail(
            "train",
            f"--resume: no run at {args.out} (the default --out for these options); "
            "name the run to continue with --out RUN_DIR",
        )
    try:
        if args.resume:
            if args.overwrite:
                return _fail("train", "--resume continues a run and --overwrite replaces it: give one of them")
            config, seen = resumed_config(args.out, {k: v for k, v in fields.items() if k != "out"}, _note)
            if seen >= config.samples:
                _note(finished_notice(args.out, seen, config.samples, cli=True))
                return 0
        else:
            config = TrainConfig(**fields)
        config.validate()
        if config.samples % config.batch_size:
            steps = -(-config.samples // config.batch_size)
            _note(
                f"--samples {config.samples} is {steps} minibatches of {config.batch_size}: "
                f"{steps * config.batch_size} samples will be processed"
            )
        notices = []
        shown = warnings.showwarning

        def show(message, category, *rest, **kwargs):  # the too-short notice after the summary, others at once
            if issubclass(category, TooShortToJudge):
                notices.append(str(message))
            else:
                shown(message, category, *rest, **kwargs)

        with warnings.catch_warnings():
            warnings.simplefilter("always", TooShortToJudge)
            warnings.showwarning = show
            summary = train(config, resume=args.resume, overwrite=args.overwrite)
    except RunExists as error:
        return _fail("train", error.message(cli=True))
    except TrainingDiverged as error:
        return _fail("train", error, 3)
    except TrainingStopped as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            if stop.samples_seen >= config.samples:  # in the final evaluation or the pictures
                then = (
                    f"its training is complete (nothing to resume); draw its pictures with: aevb-fast plot {stop.out}"
                )
            elif stop.saved_at is None:
                then = "nothing to resume: start again with the same command and --overwrite"
            else:
                then = f"resume with: {resume_command(stop.out, threads=args.threads)}"
            print(f"aevb-fast train: {str(stop).removeprefix('train: ')}; {then}", file=sys.stderr)
        return 128 + stop.signum
    except (FileNotFoundError, ValueError, TypeError, RunError) as error:
        return _fail("train", error)
    if int(os.environ.get("RANK", "0")) == 0:
        # The run's average: all its training time (its evaluations not counted), not the last interval's.
        wall = summary.get("train_wall_s") or 0.0
        rate = f"{summary['samples_seen'] / wall:.0f} samples/s on average" if wall > 0 else "no training time"
        units = " nats" if summary["bounds_in_nats"] else " (minus cross-entropies, not nats)"
        print(
            f"aevb-fast train: {summary['samples_seen']} samples, train ELBO {summary['train_elbo']:.2f}, "
            f"test ELBO {summary['test_elbo']:.2f}{units}, {rate}; run in {config.out}"
        )
        for notice in notices:
            _note(notice.removeprefix("train: "))
    return 0


def _eval_options_error(args) -> str | None:
    """What is wrong with eval's counts, or None (one line, before anything is loaded)."""
    if args.importance_samples < 1:
        return (
            f"--importance-samples must be >= 1 (K, the samples per test point of the log p(x) "
            f"estimate), got {args.importance_samples}"
        )
    if args.limit is not None and args.limit < 1:
        return f"--limit must be >= 1 (leave it out to evaluate every test point), got {args.limit}"
    if args.batch_size < 1:
        return f"--batch-size must be >= 1 (test points per batch of the log p(x) estimate), got {args.batch_size}"
    return None


def cmd_eval(args) -> int:
    import datetime
    import time

    error = _eval_options_error(args)
    if error:
        return _fail("eval", error)
    from .training.checkpoint import EVALS, RunError, build_model, resolve_run
    from .training.evaluate import load_run_data, log_marginal_likelihood, test_elbo

    try:
        run = resolve_run(args.run)
        state = run.load(args.device)
        model = build_model(state, args.device)
        if args.data_dir:
            state["config"]["data_dir"] = args.data_dir
        d = load_run_data(state).to(args.device)
    except (FileNotFoundError, ValueError, RunError) as error:
        return _fail("eval", error)
    likelihood = state.get("model_spec", {}).get("likelihood") or model.decoder.likelihood
    if not d.bounds_in_nats(likelihood):
        print(
            f"aevb-fast eval: the run's data {d.name!r} is not binary: its Bernoulli test ELBO and log p(x) are "
            "minus cross-entropies of grey levels, not nats comparable with published ones",
            file=sys.stderr,
        )
    x = d.test[: args.limit] if args.limit else d.test
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    started = time.perf_counter()
    # The settings first: each result is one line of RUN/eval.jsonl, never replaced.
    result = {
        "checkpoint": str(run.checkpoint),
        "samples_seen": state.get("samples_seen"),
        "importance_samples": args.importance_samples,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "test_points": len(x),
        "test_elbo": test_elbo(model, x, generator=g, likelihood=likelihood),
    }
    log_px = log_marginal_likelihood(
        model, x, args.importance_samples, batch_size=args.batch_size, generator=g, progress=True, likelihood=likelihood
    )
    stderr = (log_px.std() / len(log_px) ** 0.5).item() if len(log_px) > 1 else None  # JSON has no NaN
    result.update(
        log_px=log_px.mean().item(),
        log_px_stderr=stderr,
        wall_s=round(time.perf_counter() - started, 3),
        evaluated_at=datetime.datetime.now().isoformat(timespec="seconds"),
    )
    print(json.dumps(result, indent=2))
    path = run.path / EVALS
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")
    kept = sum(1 for line in path.read_text().splitlines() if line.strip())
    print(
        f"aevb-fast eval: result appended to {path} ({kept} result{'s' if kept > 1 else ''} there, "
        "each with its settings)",
        file=sys.stderr,
    )
    return 0


def cmd_plot(args) -> int:
    from .training.checkpoint import RunError
    from .training.plots import plot_run

    try:
        paths = plot_run(args.run)
    except (FileNotFoundError, ValueError, RunError) as error:
        return _fail("plot", error)
    for path in paths:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aevb-fast",
        description="Fused operators for the VAE objective (AEVB): benchmark them, train, evaluate and plot "
        "VAEs, reproduce the paper. Also runs as: python -m aevb_fast.cli",
    )
    parser.add_argument("--version", action="version", version=f"aevb-fast {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_info_parser,
        _add_bench_parser,
        _add_train_parser,
        _add_eval_parser,
        _add_plot_parser,
        _add_reproduce_parser,
    ):
        add(sub)
    return parser


def _add_info_parser(sub) -> None:
    info = sub.add_parser("info", help="print build_info(): version, torch, CUDA, CPU instruction set")
    info.set_defaults(func=cmd_info)


def _add_bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="time each op forward+backward against eager and compiled PyTorch")
    bench.add_argument(
        "--ops",
        type=lambda s: s.split(","),
        default=None,
        help="the ops to time, separated by commas (default: every op family's functions but the "
        "linear heads, which --head times; also kl_to_prior, sample_and_kl_to_prior)",
    )
    bench.add_argument(
        "--sizes",
        type=_int_list,
        default=None,
        help="batch sizes B (default 100,4096,65536 on CPU, up to 1048576 on GPU)",
    )
    bench.add_argument("--data", type=int, default=784, help="data size D (log-likelihoods)")
    bench.add_argument("--latent", type=int, default=64, help="latent size J (sample, KL)")
    bench.add_argument(
        "-L",
        "--samples",
        type=_int_list,
        default=[1, 5],
        help="samples of z per data point, for reparameterize and sample_and_kl",
    )
    bench.add_argument(
        "--dtype",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated (default float32,bfloat16, and float16 on GPU)",
    )
    bench.add_argument(
        "--modes",
        type=lambda s: s.split(","),
        default=["forward+backward"],
        help="comma-separated: forward, backward, forward+backward",
    )
    bench.add_argument("--device", default="all", help="cpu, cuda, or all (those available)")
    bench.add_argument(
        "--fresh-pages",
        action="store_true",
        help="CPU: leave glibc's allocator as it is (every large output is fresh pages)",
    )
    bench.add_argument(
        "--train",
        action="store_true",
        help="time whole training steps (fused vs plain PyTorch vs compiled) instead of ops",
    )
    bench.add_argument(
        "--head",
        action="store_true",
        help="time and measure the peak memory of the decoder's output layer with its likelihood: "
        "eager vs compiled vs af.linear_bernoulli_log_prob (default B=65536, L=1,5)",
    )
    bench.add_argument("--hidden", type=int, default=500, help="--train, --head: hidden units")
    bench.add_argument(
        "--no-memory",
        dest="no_memory",
        action="store_true",
        help="--train: skip the peak memory of each step (one fresh process per provider and size)",
    )
    bench.add_argument("--train-latent", dest="train_latent", type=int, default=20, help="--train: latent size J")
    bench.add_argument(
        "--matmul",
        choices=["float32", "tf32"],
        default="float32",
        help="--train: every provider's matrix products in float32 (default) or TF32, rows labelled so",
    )
    bench.add_argument("--repeats", type=int, default=11, help="timed rounds per provider")
    bench.add_argument("--min-time", type=float, default=0.02, help="seconds per timed round")
    bench.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    bench.add_argument(
        "--save",
        action="store_true",
        help="write the rows into benchmarks/results/<device>/ops.jsonl (train.jsonl with --train, "
        "head.jsonl with --head); "
        "a row of the same case, device, threads, repeats and versions replaces the old one",
    )
    bench.add_argument("--out", default="", help="write the rows into this JSON-lines file instead (same rule)")
    # Each option's (dest, default), by its first flag: what _options_not_read compares with.
    defaults = {a.option_strings[0]: (a.dest, a.default) for a in bench._actions if a.option_strings}
    bench.set_defaults(func=cmd_bench, bench_defaults=defaults)


def _add_train_parser(sub) -> None:
    from .training import config
    from .training.config import LARGE_BATCH

    train = sub.add_parser(
        "train",
        help="train a VAE with AEVB (the paper's setting by default)",
        description=f"Train a VAE with AEVB. Batch sizes up to {LARGE_BATCH} use the paper's recipe (Adagrad, "
        f"lr {config.PAPER_LR:g}); larger ones the large-batch recipe (Adam at a peak lr of "
        f"{config.LARGE_BATCH_LR:g} x min(1, sqrt(M/{config.LARGE_BATCH_LR_AT})), "
        f"{config.LARGE_BATCH_WARMUP} warm-up steps, the peak held, then a linear decay over the last "
        f"{config.WSD_DECAY_FRACTION:g} of the steps to {config.LARGE_BATCH_FINAL_LR:g} of the peak, "
        f"gradient norm clipped at {config.LARGE_BATCH_CLIP:g}). --samples counts training "
        "examples processed; -L counts draws of z per example.",
    )
    option = _option_adder(train)
    _add_train_data_options(option)
    _add_train_recipe_options(option)
    _add_train_run_options(option)
    _add_threads_option(train)
    train.set_defaults(
        func=cmd_train,
        compile=None,
        bf16=None,
        plots=None,
        fused_head=None,
        cuda_graph=None,
        resume=False,
        overwrite=False,
    )


# The commands that run long on the CPU choose their threads (aevb_fast.threads): torch's default,
# cut to the cores other jobs leave idle (there, every parallel op waits for a thread the OS has
# set aside: 1.5x slower steps beside one busy job on 2 cores, 80x slower small ops beside two).
AUTO_THREADS = ("train", "eval", "reproduce")


def _choose_threads(args, device) -> None:
    """--threads N as given; 0 chooses for a CPU run (aevb_fast.threads), except where the count
    is already someone's choice: OMP_NUM_THREADS set, or a torchrun process (torchrun sets it
    per process, and ranks would see each other as the other jobs)."""
    from .threads import choose_threads

    say = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if args.threads > 0:
        choose_threads(args.threads, f"aevb-fast {args.command}", say=say)
    elif (
        not (isinstance(device, str) and device.startswith("cuda"))
        and "OMP_NUM_THREADS" not in os.environ
        and int(os.environ.get("WORLD_SIZE", "1")) == 1
    ):
        choose_threads(0, f"aevb-fast {args.command}", say=say)


def _add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch's CPU threads; 0 chooses: torch's default, cut to the cores that other jobs "
        "leave idle, which is said (default: 0)",
    )


def _option_adder(parser: argparse.ArgumentParser):
    def option(*flags, help, default=None, **kwargs):
        """Every option defaults to None (so a resumed run can tell what was given) and shows the
        default that applies."""
        shown = f" (default: {default})" if default is not None else ""
        parser.add_argument(*flags, help=help + shown, **kwargs)

    return option


def _add_train_data_options(option) -> None:
    """What is trained on, and the model."""
    from .training.config import LARGE_BATCH, TrainConfig

    option(
        "--dataset",
        default=TrainConfig.dataset,
        metavar="NAME_OR_FILE",
        help="mnist, binarized_mnist, frey, synthetic, or a .npy/.npz/.pt file of shape (N, ...)",
    )
    option(
        "--test-data",
        dest="test_data",
        metavar="FILE",
        default="the dataset's, or a held-out split",
        help="a .npy/.npz/.pt file of test points",
    )
    option(
        "--test-fraction",
        dest="test_fraction",
        type=float,
        default=TrainConfig.test_fraction,
        help="the held-out test split of a data file that has no test points",
    )
    option(
        "--data-dir",
        dest="data_dir",
        default="$AEVB_FAST_DATA, then ../shared/data",
        help="folder with the built-in datasets' files",
    )
    option(
        "--binarize",
        choices=["dynamic", "threshold"],
        default=TrainConfig.binarize,
        help="MNIST: a Bernoulli draw per minibatch or x > 0.5",
    )
    option(
        "--likelihood",
        choices=["bernoulli", "gaussian"],
        default="the dataset's",
        help="p(x|z): bernoulli needs values in [0, 1]",
    )
    option("--latent", type=int, default=TrainConfig.latent, help="latent size J")
    option("--hidden", type=int, default=TrainConfig.hidden, help="hidden units per layer")
    option("--depth", type=int, default=TrainConfig.depth, help="hidden layers of encoder and decoder")
    option(
        "--init-std",
        dest="init_std",
        type=float,
        default=TrainConfig.init_std,
        help="std of the N(0, std^2) initial parameters",
    )
    option(
        "--batch-size",
        dest="batch_size",
        type=int,
        default=TrainConfig.batch_size,
        help=f"the minibatch M; above {LARGE_BATCH} the large-batch recipe applies",
    )
    option(
        "--samples",
        type=_count,
        default=f"{TrainConfig.samples:g}",
        help="training examples to process in all, e.g. 1e7 (the paper's x-axis; not -L)",
    )
    option(
        "-L",
        "--z-samples",
        "--elbo-samples",
        dest="num_samples",
        type=int,
        default=TrainConfig.num_samples,
        help="draws of z per training example in the ELBO estimate (not --samples)",
    )


def _add_train_recipe_options(option) -> None:
    """How it is optimised."""
    from .training import config
    from .training.config import LARGE_BATCH, TrainConfig

    option(
        "--algorithm",
        choices=["aevb", "wake-sleep"],
        default=TrainConfig.algorithm,
        help="wake-sleep: the paper's baseline",
    )
    option(
        "--estimator", choices=["analytic", "generic", "iwae"], default=TrainConfig.estimator, help="the ELBO estimator"
    )
    option(
        "--optimizer",
        choices=["adagrad", "adam"],
        default=f"adagrad for M <= {LARGE_BATCH}, adam above",
        help="the optimizer",
    )
    option(
        "--lr",
        type=float,
        help="learning rate (the peak, with warm-up and decay)",
        default=f"{config.PAPER_LR:g} (Adagrad); Adam: {config.LARGE_BATCH_LR:g} x "
        f"min(1, sqrt(M/{config.LARGE_BATCH_LR_AT}))",
    )
    option(
        "--lr-scaling",
        dest="lr_scaling",
        choices=["none", "linear", "sqrt"],
        default="none",
        help="scale lr by M / 100 (linear) or its square root",
    )
    option(
        "--warmup",
        type=int,
        default=f"0, or {config.LARGE_BATCH_WARMUP} for the large-batch recipe",
        help="steps of linear learning-rate warm-up",
    )
    option(
        "--lr-decay",
        dest="lr_decay",
        choices=["none", "cosine", "wsd"],
        default="none, or wsd for the large-batch recipe",
        help="learning-rate decay over --samples: cosine from the warm-up on, or wsd (warm-up, stable, "
        "then a linear decay over the last --decay-fraction of the steps)",
    )
    option(
        "--final-lr",
        dest="final_lr",
        type=float,
        default=f"{config.LARGE_BATCH_FINAL_LR:g} of the peak with a decay",
        help="where the decay ends, as a fraction of the peak lr",
    )
    option(
        "--decay-fraction",
        dest="decay_fraction",
        type=float,
        default=f"{config.WSD_DECAY_FRACTION:g}",
        help="wsd: the share of the steps, at the end of --samples, over which the rate decays",
    )
    option(
        "--clip-grad-norm",
        dest="clip_grad_norm",
        type=float,
        default=f"0 (off), or {config.LARGE_BATCH_CLIP:g} for the large-batch recipe",
        help="clip the gradient norm",
    )
    option(
        "--weight-decay",
        dest="weight_decay",
        type=float,
        default="1 / N_train",
        help="L2 penalty: the N(0, I) prior on the parameters",
    )
    option(
        "--kl-warmup",
        dest="kl_warmup",
        type=_count,
        default=TrainConfig.kl_warmup,
        help="training examples over which the KL weight rises from 0 to 1",
    )
    option(
        "--free-bits", dest="free_bits", type=float, default=TrainConfig.free_bits, help="free bits per latent (nats)"
    )


def _add_train_run_options(option) -> None:
    """Where the run lives, how it is evaluated and run."""
    from .training import config
    from .training.config import TrainConfig

    option("--seed", type=int, default=TrainConfig.seed, help="random seed")
    option("--device", default=TrainConfig.device, help="cpu or cuda")
    option("--out", default="runs/<dataset>-j<latent>-h<hidden>-b<batch>-n<samples>-s<seed>", help="run directory")
    option(
        "--eval-every",
        dest="eval_every",
        type=_count,
        default=f"{config.EVAL_EVERY:g}, or --samples / 10 for shorter runs (at least one minibatch)",
        help="training examples between evaluations and checkpoints",
    )
    option(
        "--eval-points",
        dest="eval_points",
        type=_count,
        default=TrainConfig.eval_points,
        help="training points in the logged train bound",
    )
    option(
        "--backend",
        choices=["fused", "reference"],
        default=TrainConfig.backend,
        help="reference: the same model with plain PyTorch ops",
    )
    option(
        "--no-fused-head",
        dest="fused_head",
        action="store_false",
        default=False,
        help="keep the decoder's output layer apart from the likelihood (the logits stored whole)",
    )
    option("--compile", action="store_true", default=False, help="torch.compile the training objective")
    option(
        "--no-cuda-graph",
        dest="cuda_graph",
        action="store_false",
        default=False,
        help="CUDA: run every step eagerly instead of replaying it as one captured CUDA graph",
    )
    option("--bf16", action="store_true", default=False, help="bfloat16 autocast (GPU)")
    option("--no-plots", dest="plots", action="store_false", default=False, help="write no PNG pictures")
    option("--resume", action="store_true", default=False, help="continue the run in --out from its checkpoint")
    option("--overwrite", action="store_true", default=False, help="replace the run in --out")


def _add_eval_parser(sub) -> None:
    evaluate = sub.add_parser(
        "eval",
        help="test-set ELBO and importance-sampled log p(x) of a trained run",
        description="Test-set ELBO and importance-sampled log p(x) of a trained run. Each "
        "result is printed and appended, with its settings, as one line "
        "to RUN/eval.jsonl; no earlier result is replaced.",
    )
    evaluate.add_argument("run", help="a run directory or its checkpoint.pt")
    evaluate.add_argument(
        "--importance-samples",
        type=_count,
        default=1000,
        help="K, samples per test point of the log p(x) estimate, >= 1 (default: 1000)",
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=20, help="data points per batch of the log p(x) estimate (default: 20)"
    )
    evaluate.add_argument("--limit", type=_count, default=None, help="only the first N >= 1 test points (default: all)")
    evaluate.add_argument("--device", default="cpu", help="(default: cpu)")
    evaluate.add_argument("--data-dir", help="folder with the dataset's files (default: the run's)")
    evaluate.add_argument("--seed", type=int, default=0, help="(default: 0)")
    _add_threads_option(evaluate)
    evaluate.set_defaults(func=cmd_eval)


def _add_plot_parser(sub) -> None:
    plot = sub.add_parser("plot", help="PNG pictures of a run: learning curve, reconstructions, samples")
    plot.add_argument("run", help="a run directory")
    plot.set_defaults(func=cmd_plot)


def _add_reproduce_parser(sub) -> None:
    rep = sub.add_parser("reproduce", help="the paper's Figures 2 and 3: AEVB against wake-sleep (resumable)")
    rep.add_argument("what", choices=["figure2", "figure3", "report"])
    rep.add_argument("--dataset", choices=["mnist", "frey"], default="mnist", help="figure2")
    rep.add_argument("--latents", type=_int_list, help="figure2: latent sizes (default: the paper's)")
    # Left at None, an option takes aevb_fast.reproduce's default (the paper's setting).
    rep.add_argument("--samples", type=_count, help="training samples per run (default: the paper's 1e7)")
    rep.add_argument("--algorithms", type=lambda s: s.split(","), help="default: aevb,wake-sleep")
    rep.add_argument("--batch-size", dest="batch_size", type=int, help="default: the paper's 100")
    rep.add_argument("--lr", type=float, help="Adagrad step size (default 0.02)")
    rep.add_argument("--importance-samples", dest="importance_samples", type=int, help="figure3: K (default 1000)")
    rep.add_argument("--points", type=int, help="figure3: data points in the estimate (default 1000)")
    rep.add_argument("--device", default="cpu")
    rep.add_argument("--data-dir", dest="data_dir")
    rep.add_argument(
        "--root",
        type=Path,
        help="where the runs live (default docs/reproduction/runs: their "
        "logs are committed, their checkpoints are not)",
    )
    rep.add_argument("--out", type=Path, help="report: the Markdown file (default docs/reproduction.md)")
    rep.add_argument("--notes", type=Path, help="report: discussion appended (default docs/reproduction_notes.md)")
    _add_threads_option(rep)
    rep.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from . import reproduce

    try:
        png = _reproduce(reproduce, args)
    except (FileNotFoundError, ValueError) as error:
        print(f"aevb-fast reproduce: {error}", file=sys.stderr)
        return 2
    print(f"aevb-fast reproduce: wrote {png}")
    return 0


def _reproduce(reproduce, args) -> Path:
    def given(*names):  # the options the user gave, by the functions' parameter names
        return {name: getattr(args, name) for name in names if getattr(args, name) is not None}

    if args.what == "figure2":
        latents = args.latents or list(reproduce.LATENTS[args.dataset])
        return reproduce.figure2(
            args.dataset,
            latents,
            device=args.device,
            **given("samples", "root", "batch_size", "lr", "data_dir", "algorithms"),
        )
    if args.what == "figure3":
        return reproduce.figure3(
            device=args.device, **given("samples", "root", "importance_samples", "points", "data_dir", "batch_size")
        )
    return reproduce.report(**given("root", "out", "notes"))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aevb_fast")
    except PackageNotFoundError:
        return "unknown (not installed)"


# What the [train] extra brings: the trainer, benchmarks and plots need it, the operators do not.
TRAIN_EXTRA = ("tqdm", "matplotlib", "scipy")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = getattr(args, "device", None)
    if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
        return _fail(
            args.command, f"--device {device}, but torch {torch.__version__} sees no CUDA device; use --device cpu"
        )
    if args.command in AUTO_THREADS and args.threads < 0:
        return _fail(args.command, f"--threads must be >= 0 (0: choose), got {args.threads}")
    try:
        if args.command in AUTO_THREADS:
            _choose_threads(args, device)
        return args.func(args)  # the layers are imported here, as each command needs them
    except KeyboardInterrupt as interrupt:  # train says what it kept itself; the bench keeps the rows it saved
        if hasattr(interrupt, "signum"):  # a training run stopped by a signal (TrainingStopped), its checkpoint saved
            stopped = str(interrupt).removeprefix("train: ")
            print(f"\naevb-fast {args.command}: {stopped}; the same command goes on from there", file=sys.stderr)
            return 128 + interrupt.signum
        saving = args.command == "bench" and (getattr(args, "save", False) or getattr(args, "out", ""))
        saved = "; the rows measured so far are saved" if saving else ""
        print(f"\naevb-fast {args.command}: interrupted (Ctrl-C){saved}", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        return _fail(
            args.command,
            f"needs {error.name}, from the [train] extra: "
            'pip install --no-build-isolation -e ".[train]" (or pip install tqdm matplotlib scipy)',
        )


if __name__ == "__main__":
    sys.exit(main())
