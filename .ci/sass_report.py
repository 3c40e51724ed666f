"""A per-kernel report from the SASS that nvcc makes of csrc/cuda on this machine (no GPU needed):
registers, local memory, and what the kernels' loops issue (issue 30, section 4).

    python .ci/sass_report.py                        # every csrc/cuda/*.cu, sm_90, the build's -O3
    python .ci/sass_report.py --files csrc/cuda/sample_and_kl.cu --json report.json

Each file is compiled to a cubin (``nvcc -cubin``, the flags of the CMake build: C++20, relaxed
constexpr, -O3) and read back with ``cuobjdump -res-usage`` and ``cuobjdump -sass``. For every
kernel the report gives its registers (occupancy falls below 50 % on an H100/H200 above 64 per
thread), its local memory (spills), its instruction count and, for its largest loop (a backward
branch and the instructions it spans: the grid-stride loop that does the work), the loop's
length and its mix: fused multiply-adds (FFMA), plain multiplies and adds (FMUL, FADD, which
``__fmul_rn``/``__fadd_rn`` force where an FFMA would do), special-function instructions (MUFU:
exp, log, sin/cos, rsqrt), 64-bit integer work (IMAD.WIDE/IADD3.X pairs of flat indices), and
calls (slow paths of IEEE division and square root). The streaming loop's instructions per byte
moved are what to set against the H200's budget: about 9 instructions per byte at its copy
bandwidth.

cuobjdump (and nvdisasm, which its -sass runs) is not in a minimal CUDA toolkit: the report takes
it from $CUOBJDUMP, the PATH, or the registry's ``nvidia-cuda-cuobjdump`` and
``nvidia-cuda-nvdisasm`` wheels, unpacked (not installed) into
~/.cache/aevb_fast/cuda-tools.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path.home() / ".cache" / "aevb_fast" / "cuda-tools"
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
BRANCH = re.compile(r"\b(?:BRA|BRX)\b.*?0x([0-9a-f]+)")
MIX = {  # column: opcodes counted (by prefix of the opcode, before its first '.')
    "FFMA": ("FFMA", "HFMA2", "DFMA"),
    "FMUL": ("FMUL", "HMUL2", "DMUL"),
    "FADD": ("FADD", "HADD2", "DADD"),
    "MUFU": ("MUFU",),
    "64-bit int": ("IMAD.WIDE", "IADD3.X", "LEA.HI.X", "IMAD.HI"),
    "calls": ("CALL",),
}


def find_cuobjdump() -> str:
    found = os.environ.get("CUOBJDUMP") or shutil.which("cuobjdump")
    if found:
        return found
    bin_dir = TOOLS / "nvidia" / "cu13" / "bin"
    for name in ("cuobjdump", "nvdisasm"):
        tool = bin_dir / name
        if not tool.exists() and not (name == "nvdisasm" and shutil.which(name)):
            TOOLS.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as download:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "download",
                        "--no-deps",
                        "-q",
                        "-d",
                        download,
                        f"nvidia-cuda-{name}>=13,<14",
                    ],
                    check=True,
                )
                for wheel in Path(download).glob("*.whl"):
                    zipfile.ZipFile(wheel).extractall(TOOLS)
        if tool.exists():
            tool.chmod(0o755)
    # cuobjdump -sass runs nvdisasm from NVDISASM_PATH or the PATH.
    os.environ.setdefault("NVDISASM_PATH", str(bin_dir))
    return str(bin_dir / "cuobjdump")


def nvcc_flags(include: Path) -> list[str]:
    import sysconfig

    import torch

    torch_include = Path(torch.__file__).parent / "include"
    return [
        "-std=c++20",
        "--expt-relaxed-constexpr",
        "-O3",
        "-DNDEBUG",
        "-arch=sm_90",
        "-cubin",
        "-I",
        str(ROOT / "csrc"),
        "-I",
        str(include),
        "-I",
        str(torch_include),
        "-I",
        str(torch_include / "torch" / "csrc" / "api" / "include"),
        "-I",
        sysconfig.get_paths()["include"],
        "-D_GLIBCXX_USE_CXX11_ABI=1",
    ]


def compile_cubin(source: Path, out: Path, flags: list[str]) -> Path:
    cubin = out / (source.stem + ".cubin")
    result = subprocess.run(
        [os.environ.get("NVCC", "nvcc"), *flags, "-o", str(cubin), str(source)], capture_output=True, text=True
    )
    if result.returncode:
        sys.exit(f"sass_report: nvcc failed on {source}:\n{result.stderr[-3000:]}")
    return cubin


def demangle(names: list[str]) -> dict[str, str]:
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def short_name(demangled: str) -> str:
    """'void aevb_fast::cuda::(anonymous namespace)::row_sum_kernel<1, 256, aevb_fast::cuda::
    (anonymous namespace)::BernoulliForward<float> >(...)' -> 'row_sum_kernel<1, 256,
    BernoulliForward<float>>': the kernel and its template arguments."""
    name = demangled.replace("(anonymous namespace)::", "").removeprefix("void ")
    depth = 0
    for end, char in enumerate(name):  # the name ends at the argument list: the first '(' outside <>
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "(" and depth == 0:
            name = name[:end]
            break
    for prefix in ("aevb_fast::cuda::", "aevb_fast::", "c10::", "at::"):
        name = name.replace(prefix, "")
    for value, layout in enumerate(("packed", "any layout")):  # sample_and_kl.cu's GroupLayout
        name = name.replace(f"(GroupLayout){value}", layout)
    return name.replace("BFloat16", "bf16").replace("Half", "f16").replace(" >", ">")


def parse_resources(text: str) -> dict[str, dict[str, int]]:
    resources, current = {}, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Function "):
            current = line[len("Function ") :].rstrip(":")
        elif current and line.startswith("REG:"):
            fields = dict(f.split(":", 1) for f in line.split() if ":" in f)
            resources[current] = {
                "registers": int(fields["REG"]),
                "stack": int(fields["STACK"]),
                "local": int(fields["LOCAL"]),
            }
            current = None
    return resources


def parse_sass(text: str) -> dict[str, list[tuple[int, str, str]]]:
    kernels, current = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Function : "):
            current = stripped[len("Function : ") :]
            kernels[current] = []
        elif current:
            match = INSTRUCTION.search(line)
            if match:
                kernels[current].append((int(match.group(1), 16), match.group(3), match.group(4)))
    return kernels


def mix(instructions: list[tuple[int, str, str]]) -> dict[str, int]:
    counts = {column: 0 for column in MIX}
    for _, opcode, _ in instructions:
        for column, prefixes in MIX.items():
            if any(opcode == p or opcode.startswith(p + ".") for p in prefixes):
                counts[column] += 1
    return counts


def largest_loop(instructions: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The instructions spanned by the backward branch that spans the most (the kernel's main
    loop); empty for a kernel without a loop."""
    return max(loops(instructions), key=len, default=[])


def loops(instructions: list[tuple[int, str, str]]) -> list[list[tuple[int, str, str]]]:
    """Each backward branch's loop: the instructions from its target to it (NOPs left out)."""
    found = []
    for i, (address, opcode, operands) in enumerate(instructions):
        target = BRANCH.search(f"{opcode}{operands}") if opcode.split(".")[0] in ("BRA", "BRX") else None
        if target and int(target.group(1), 16) < address:
            start = int(target.group(1), 16)
            found.append([ins for ins in instructions[: i + 1] if ins[0] >= start and ins[1] != "NOP"])
    return found


def hot_loop(instructions: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The streaming loop (one iteration per element, pack or unrolled group of packs): of the
    innermost loops that load global memory, the one that moves the most bytes, the shorter of a
    tie. nvcc compiles a loop once per case of a branch that does not change inside it (an input
    broadcast per row or not): the copy for full inputs moves the most. Empty for a kernel without
    one."""
    loading = [body for body in loops(instructions) if any(ins[1].startswith("LDG") for ins in body)]
    inner = [
        body
        for body in loading
        if not any(other is not body and set(other) < set(body) for other in loading)  # holds no other
    ]
    return max(inner, key=lambda body: (bytes_moved(body), -len(body)), default=[])


def access_bytes(opcode: str) -> int:
    """A global load's or store's width (.128 16 bytes, .64 8, .U16/.S16 2, .U8/.S8 1, else 4)."""
    parts = set(opcode.split("."))
    return (
        16
        if "128" in parts
        else 8
        if "64" in parts
        else 2
        if {"U16", "S16"} & parts
        else 1
        if {"U8", "S8"} & parts
        else 4
    )


def bytes_moved(instructions: list[tuple[int, str, str]]) -> int:
    """Bytes one thread loads and stores to global memory in these instructions (LDG/STG). Where
    some accesses are 128-bit packs, the narrower ones are taken for per-row values (an input
    broadcast along its row, a row's sum: read from the cache or written once a row) and not
    counted. A heuristic: it holds for csrc/cuda's packed loops today, where every per-element
    access is a pack; a per-element scalar access beside packs would be missed."""
    widths = [access_bytes(opcode) for _, opcode, _ in instructions if opcode.split(".")[0] in ("LDG", "STG")]
    return sum(w for w in widths if w == 16) if 16 in widths else sum(widths)


def report(files: list[Path]) -> list[dict]:
    cuobjdump = find_cuobjdump()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(tmp) / "include"
        (include / "c10" / "cuda" / "impl").mkdir(parents=True)
        # torch's CPU wheel lacks this header (see check_cuda_compile.sh)
        (include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text(
            "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"
        )
        flags = nvcc_flags(include)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            cubins = list(pool.map(lambda f: compile_cubin(f, Path(tmp), flags), files))
        for source, cubin in zip(files, cubins):
            resources = parse_resources(
                subprocess.run([cuobjdump, "-res-usage", str(cubin)], capture_output=True, text=True, check=True).stdout
            )
            kernels = parse_sass(
                subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
            )
            names = demangle(list(kernels))
            for mangled, instructions in kernels.items():
                kernel, loop, hot = short_name(names[mangled]), largest_loop(instructions), hot_loop(instructions)
                moved = bytes_moved(hot)
                rows.append(
                    {
                        "file": source.name,
                        "kernel": kernel,
                        "mangled": mangled,
                        **resources.get(mangled, {}),
                        "instructions": sum(1 for ins in instructions if ins[1] != "NOP"),
                        "loop_instructions": len(loop),
                        "hot_loop_instructions": len(hot),
                        "hot_loop_bytes": moved,
                        "instructions_per_byte": len(hot) / moved if moved else None,
                        "hot_loop_mix": mix(hot),
                    }
                )
    return rows


def format_rows(rows: list[dict]) -> str:
    columns = list(MIX)
    head = [
        "file",
        "kernel",
        "regs",
        "stack B",
        "local B",
        "instrs",
        "main loop",
        "hot loop",
        "bytes",
        "instr/byte",
    ] + columns
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in sorted(rows, key=lambda r: (r["file"], r["kernel"])):
        per = r["instructions_per_byte"]
        cells = [
            r["file"],
            f"`{r['kernel']}`",
            str(r.get("registers", "?")),
            str(r.get("stack", "?")),
            str(r.get("local", "?")),
            str(r["instructions"]),
            str(r["loop_instructions"]),
            str(r["hot_loop_instructions"]),
            str(r["hot_loop_bytes"]),
            "-" if per is None else f"{per:.1f}",
        ] + [str(r["hot_loop_mix"][c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="*", type=Path, default=None, help="default: csrc/cuda/*.cu")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--kernel", default=None, help="only kernels whose name contains this")
    args = parser.parse_args()
    files = args.files or sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        sys.exit(f"sass_report: no such file: {', '.join(missing)}")
    rows = report(files)
    if args.kernel:
        rows = [r for r in rows if args.kernel in r["kernel"]]
    print(format_rows(rows))
    print(
        f"(sm_90, nvcc -O3, {len(rows)} kernels. 'stack B': a thread's stack frame, where spilled registers "
        "go (ptxas -v; check_cuda_compile.sh fails on any); 'local B': other local memory. 'main loop': the instructions spanned by the kernel's widest "
        "backward branch; 'hot loop': of its innermost loops that load global memory, the one that moves "
        "the most bytes (the streaming loop for full inputs), whose mix the last columns count; 'bytes': what "
        "one thread loads and stores in an iteration of it (next to 128-bit packs, narrower accesses are "
        "taken for per-row values and not counted: a heuristic); "
        "'instr/byte': the hot loop's instructions per byte, against the H200's budget of about 9 "
        "thread-instructions per byte moved at its copy bandwidth. Static counts: a branch not taken "
        "(a broadcast input's load, the KL's prior terms without a prior) counts as if it ran.)"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
