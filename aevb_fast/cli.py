"""The ``aevb-fast`` command (also ``python -m aevb_fast.cli``)."""

from __future__ import annotations

import argparse
import json
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


def cmd_bench(args) -> int:
    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = sorted(set(args.ops) - set(bench.OPS))
    if unknown:
        print(f"aevb-fast bench: unknown op(s) {unknown}; choose from {list(bench.OPS)}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("aevb-fast bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    print(f"aevb-fast bench: {args.device} ({bench.device_name(args.device)}), {torch.get_num_threads()} threads, "
          f"{args.dtype}, D={args.data}, J={args.latent}, forward+backward, median of {args.repeats}")
    rows = bench.run(args.ops, args.sizes, args.data, args.latent, DTYPES[args.dtype], args.device,
                     args.repeats, args.min_time)
    print(bench.format_table(rows))
    print("speed-ups are ratios of medians measured side by side in this run (higher is better)")
    if args.save or args.out:
        path = Path(args.out) if args.out else bench.results_path(args.device)
        bench.save(rows, path)
        print(f"appended {len(rows)} rows to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aevb-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print build_info(): version, torch, CUDA, CPU instruction set")
    info.set_defaults(func=cmd_info)
    bench = sub.add_parser("bench", help="time each op forward+backward against eager and compiled PyTorch")
    bench.add_argument("--ops", type=lambda s: s.split(","), default=list(
        ("reparameterize", "gaussian_kl", "sample_and_kl", "bernoulli_log_prob", "gaussian_log_prob")))
    bench.add_argument("--sizes", type=_int_list, default=[100, 4096, 65536], help="batch sizes B")
    bench.add_argument("--data", type=int, default=784, help="data size D (log-likelihoods)")
    bench.add_argument("--latent", type=int, default=64, help="latent size J (sample, KL)")
    bench.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--repeats", type=int, default=15, help="timed rounds per provider")
    bench.add_argument("--min-time", type=float, default=0.02, help="seconds per timed round")
    bench.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    bench.add_argument("--save", action="store_true",
                       help="append the rows to benchmarks/results/<device>/ops.jsonl")
    bench.add_argument("--out", default="", help="append the rows to this JSON-lines file instead")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
