"""The ``aevb-fast`` command (also ``python -m aevb_fast.cli``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _int_list(text: str) -> list[int]:
    return [int(float(v)) for v in text.split(",") if v]


def cmd_info(args) -> int:
    import aevb_fast as af

    print(json.dumps(af.build_info(), indent=2))
    return 0


def _devices(text: str) -> list[str]:
    """'all': the CPU and, when torch sees one, the GPU; else a comma-separated list."""
    if text == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return text.split(",")


def cmd_bench(args) -> int:
    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    for given, known, flag in ((args.ops, bench.OPS, "--ops"), (args.modes, bench.MODES, "--modes"),
                               (args.dtype or [], DTYPES, "--dtype")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            print(f"aevb-fast bench: unknown {flag} {unknown}; choose from {sorted(known)}", file=sys.stderr)
            return 2
    devices = _devices(args.device)
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print("aevb-fast bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
            return 2
    if args.train:
        return _bench_train(args, devices)
    # Freed memory is kept on the CPU unless --fresh-pages (see bench.keep_freed_memory).
    allocator = "glibc default"
    if "cpu" in devices and not args.fresh_pages and bench.keep_freed_memory():
        allocator = "freed memory kept (mallopt)"
    for device in devices:
        dtypes = [DTYPES[d] for d in args.dtype] if args.dtype else bench.default_dtypes(device)
        sizes = args.sizes or ([100, 4096, 65536, 1048576] if device.startswith("cuda") else [100, 4096, 65536])
        print(f"aevb-fast bench: {device} ({bench.device_name(device)}), {torch.get_num_threads()} threads, "
              f"{','.join(str(d).removeprefix('torch.') for d in dtypes)}, D={args.data}, J={args.latent}, "
              f"L={','.join(map(str, args.samples))}, {','.join(args.modes)}, median of {args.repeats}"
              + ("" if device.startswith("cuda") else f", CPU allocator: {allocator}"))
        rows = bench.run(args.ops, sizes, args.data, args.latent, dtypes, device, args.repeats, args.min_time,
                         tuple(args.modes), tuple(args.samples), allocator)
        print(bench.format_table(rows))
        print("speed-ups are ratios of medians measured side by side in this run (higher is better)")
        if args.save or args.out:
            path = Path(args.out) if args.out else bench.results_path(device)
            bench.save(rows, path)
            print(f"appended {len(rows)} rows to {path}")
    return 0


def _bench_train(args, devices: list[str]) -> int:
    from . import bench, bench_train

    for device in devices:
        sizes = args.sizes or ([100, 4096, 65536] if device.startswith("cuda") else [100, 4096, 16384])
        print(f"aevb-fast bench --train: {device} ({bench.device_name(device)}), {torch.get_num_threads()} threads, "
              f"MNIST model D=784, H={args.hidden}, J={args.train_latent}, median of {args.repeats}")
        rows = bench_train.run(sizes, device, args.repeats, hidden=args.hidden, latent=args.train_latent)
        print(bench_train.format_table(rows))
        if args.save or args.out:
            path = Path(args.out) if args.out else bench.results_path(device).with_name("train.jsonl")
            bench.save(rows, path)
            print(f"appended {len(rows)} rows to {path}")
    return 0


def _count(text: str) -> int:
    """A count written as 3e6 or 3000000."""
    value = float(text)
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a non-negative whole number, got {text!r}")
    return int(value)


def cmd_train(args) -> int:
    from .train import TrainConfig, TrainingDiverged, train

    fields = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if getattr(args, f, None) is not None}
    if args.resume:
        from .train import load_checkpoint_config

        config = load_checkpoint_config(Path(args.out) / "checkpoint.pt")
        if args.samples is not None:
            config.samples = args.samples
    else:
        fields.setdefault("out", f"runs/{args.dataset}-j{args.latent}-h{args.hidden}-b{args.batch_size}-s{args.seed}")
        config = TrainConfig(**fields)
    try:
        records = train(config, resume=args.resume)
    except TrainingDiverged as error:
        print(error, file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError) as error:
        print(f"aevb-fast train: {error}", file=sys.stderr)
        return 2
    if records and int(os.environ.get("RANK", "0")) == 0:
        last = records[-1]
        print(f"aevb-fast train: {last['samples_seen']} samples, train ELBO {last['train_elbo']:.2f}, "
              f"test ELBO {last['test_elbo']:.2f} nats, {last['samples_per_s']:.0f} samples/s; run in {config.out}")
    return 0


def cmd_eval(args) -> int:
    from . import data as datasets
    from .evaluate import log_marginal_likelihood, test_elbo
    from .train import load_checkpoint

    config, model = load_checkpoint(args.checkpoint, args.device)
    d = datasets.load(config.dataset, args.data_dir or config.data_dir, binarize=config.binarize,
                      seed=config.seed).to(args.device)
    x = d.test[: args.limit] if args.limit else d.test
    g = torch.Generator(device=args.device).manual_seed(args.seed)
    result = {"checkpoint": str(args.checkpoint), "test_points": len(x),
              "test_elbo": test_elbo(model, x, generator=g)}
    if args.importance_samples > 0:
        log_px = log_marginal_likelihood(model, x, args.importance_samples, batch_size=args.batch_size,
                                         generator=g, progress=True)
        result.update(importance_samples=args.importance_samples, log_px=log_px.mean().item(),
                      log_px_stderr=(log_px.std() / len(log_px) ** 0.5).item())
    print(json.dumps(result, indent=2))
    Path(args.checkpoint).with_name("eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_plot(args) -> int:
    from .plots import plot_run

    for path in plot_run(args.run):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aevb-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print build_info(): version, torch, CUDA, CPU instruction set")
    info.set_defaults(func=cmd_info)
    bench = sub.add_parser("bench", help="time each op forward+backward against eager and compiled PyTorch")
    bench.add_argument("--ops", type=lambda s: s.split(","), default=list(
        ("reparameterize", "gaussian_kl", "sample_and_kl", "bernoulli_log_prob", "gaussian_log_prob")))
    bench.add_argument("--sizes", type=_int_list, default=None,
                       help="batch sizes B (default 100,4096,65536 on CPU, up to 1048576 on GPU)")
    bench.add_argument("--data", type=int, default=784, help="data size D (log-likelihoods)")
    bench.add_argument("--latent", type=int, default=64, help="latent size J (sample, KL)")
    bench.add_argument("-L", "--samples", type=_int_list, default=[1, 5],
                       help="samples of z per data point, for reparameterize and sample_and_kl")
    bench.add_argument("--dtype", type=lambda s: s.split(","), default=None,
                       help="comma-separated (default float32,bfloat16, and float16 on GPU)")
    bench.add_argument("--modes", type=lambda s: s.split(","), default=["forward+backward"],
                       help="comma-separated: forward, backward, forward+backward")
    bench.add_argument("--device", default="all", help="cpu, cuda, or all (those available)")
    bench.add_argument("--fresh-pages", action="store_true",
                       help="CPU: leave glibc's allocator as it is (every large output is fresh pages)")
    bench.add_argument("--train", action="store_true",
                       help="time whole training steps (fused vs plain PyTorch vs compiled) instead of ops")
    bench.add_argument("--hidden", type=int, default=500, help="--train: hidden units")
    bench.add_argument("--train-latent", dest="train_latent", type=int, default=20, help="--train: latent size J")
    bench.add_argument("--repeats", type=int, default=11, help="timed rounds per provider")
    bench.add_argument("--min-time", type=float, default=0.02, help="seconds per timed round")
    bench.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    bench.add_argument("--save", action="store_true",
                       help="append the rows to benchmarks/results/<device>/ops.jsonl")
    bench.add_argument("--out", default="", help="append the rows to this JSON-lines file instead")
    bench.set_defaults(func=cmd_bench)

    train = sub.add_parser("train", help="train a VAE with AEVB (the paper's setting by default)")
    train.add_argument("--dataset", default="mnist", choices=["mnist", "binarized_mnist", "frey", "synthetic"])
    train.add_argument("--data-dir", dest="data_dir", help="folder with the data files (else AEVB_FAST_DATA, ../shared/data)")
    train.add_argument("--binarize", choices=["dynamic", "threshold"], help="MNIST: a Bernoulli draw per minibatch (default) or x > 0.5")
    train.add_argument("--likelihood", choices=["bernoulli", "gaussian"], help="default: the dataset's")
    train.add_argument("--latent", type=int, default=20)
    train.add_argument("--hidden", type=int, default=500)
    train.add_argument("--depth", type=int)
    train.add_argument("--batch-size", dest="batch_size", type=int, default=100)
    train.add_argument("--samples", type=_count, help="training samples to process, e.g. 3e6 (default 1e6)")
    train.add_argument("-L", "--elbo-samples", dest="num_samples", type=int, help="samples of z per data point (L)")
    train.add_argument("--algorithm", choices=["aevb", "wake-sleep"], help="default aevb; wake-sleep: the paper's baseline")
    train.add_argument("--estimator", choices=["analytic", "generic", "iwae"])
    train.add_argument("--optimizer", choices=["adagrad", "adam"])
    train.add_argument("--lr", type=float, help="default 0.02 (Adagrad) or 1e-3 (Adam)")
    train.add_argument("--lr-scaling", dest="lr_scaling", choices=["none", "linear", "sqrt"],
                       help="scale lr by batch_size / 100 (linear) or its square root")
    train.add_argument("--weight-decay", dest="weight_decay", type=float, help="default 1 / N_train")
    train.add_argument("--kl-warmup", dest="kl_warmup", type=_count, help="samples over which beta rises to 1")
    train.add_argument("--free-bits", dest="free_bits", type=float)
    train.add_argument("--init-std", dest="init_std", type=float,
                       help="std of the N(0, std^2) initial parameters (default 0.01)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device")
    train.add_argument("--out", help="run directory (default runs/<dataset>-j<latent>-h<hidden>-b<batch>-s<seed>)")
    train.add_argument("--eval-every", dest="eval_every", type=_count, help="samples between evaluations")
    train.add_argument("--eval-points", dest="eval_points", type=_count, help="training points in the train bound")
    train.add_argument("--backend", choices=["fused", "reference"], help="reference: plain PyTorch ops")
    train.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    train.add_argument("--bf16", action="store_true", default=None, help="bfloat16 autocast (GPU)")
    train.add_argument("--no-plots", dest="plots", action="store_false", default=None)
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("eval", help="test-set ELBO and importance-sampled log p(x) of a checkpoint")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--importance-samples", type=_count, default=1000, help="K")
    evaluate.add_argument("--batch-size", type=int, default=20, help="data points per batch of the log p(x) estimate")
    evaluate.add_argument("--limit", type=_count, default=0, help="only the first N test points")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.set_defaults(func=cmd_eval)

    plot = sub.add_parser("plot", help="PNG pictures of a run: learning curve, reconstructions, samples")
    plot.add_argument("run")
    plot.set_defaults(func=cmd_plot)
    rep = sub.add_parser("reproduce", help="the paper's Figures 2 and 3: AEVB against wake-sleep (resumable)")
    rep.add_argument("what", choices=["figure2", "figure3", "report"])
    rep.add_argument("--dataset", choices=["mnist", "frey"], default="mnist", help="figure2")
    rep.add_argument("--latents", type=_int_list, help="figure2: latent sizes (default: the paper's)")
    rep.add_argument("--samples", type=_count, default=10_000_000, help="training samples per run")
    rep.add_argument("--algorithms", type=lambda s: s.split(","), default=["aevb", "wake-sleep"])
    rep.add_argument("--batch-size", dest="batch_size", type=int, default=100)
    rep.add_argument("--lr", type=float, help="Adagrad step size (default 0.02)")
    rep.add_argument("--importance-samples", dest="importance_samples", type=int, default=1000, help="figure3: K")
    rep.add_argument("--points", type=int, default=1000, help="figure3: data points in the estimate")
    rep.add_argument("--device", default="cpu")
    rep.add_argument("--data-dir", dest="data_dir")
    rep.add_argument("--root", default="docs/reproduction/runs",
                     help="where the runs live (their logs are committed, their checkpoints are not)")
    rep.add_argument("--out", default="docs/reproduction.md", help="report: the Markdown file")
    rep.add_argument("--notes", default="docs/reproduction_notes.md", help="report: discussion appended")
    rep.set_defaults(func=cmd_reproduce)
    return parser


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
    root = Path(args.root)
    if args.what == "figure2":
        dataset = args.dataset
        latents = args.latents or list(reproduce.LATENTS[dataset])
        png = reproduce.figure2(dataset, latents, args.samples, root, batch_size=args.batch_size,
                                device=args.device, lr=args.lr, data_dir=args.data_dir,
                                algorithms=args.algorithms)
    elif args.what == "figure3":
        png = reproduce.figure3(args.samples, root, importance_samples=args.importance_samples,
                                points=args.points, device=args.device, data_dir=args.data_dir,
                                batch_size=args.batch_size)
    else:
        png = reproduce.report(root, Path(args.out), notes=Path(args.notes))
    return png


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
