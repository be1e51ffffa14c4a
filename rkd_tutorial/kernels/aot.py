"""Compile the kernels for a GPU architecture *without* a GPU, and report their resources.

``python -m rkd_tutorial.kernels.aot [--arch 90]`` runs Triton's whole
pipeline (Python -> Triton IR -> LLVM -> PTX -> ``ptxas`` -> cubin) for every
kernel of :mod:`.triton_kernels`, with the specialisations the launcher uses
(pointers and the row stride divisible by 16; ``N`` too unless
``--no-divisibility``), and prints
registers per thread, spill bytes and the instruction count of the angle
kernel's inner loop (SASS, via ``cuobjdump`` from Triton's bundled CUDA
tools). A kernel that does not compile for the target fails here, on any
machine, before it meets a GPU; ``sm_90`` is the H100/H200.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

from . import triton_kernels as K
from .functions import ANGLE_BLOCK, ANGLE_STAGES, ANGLE_WARPS, GRAD_BLOCK, PAIR_BLOCK


def _tools_dir():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _signature(fn, scalars):
    sig = {}
    for name in fn.arg_names:
        if name in scalars:
            sig[name] = scalars[name]
        elif name in _CONSTEXPRS:
            sig[name] = "constexpr"
        elif name.isupper():
            sig[name] = "*i32" if name.startswith("TILE") else "*fp32"
        else:
            sig[name] = "constexpr"
    return sig


_CONSTEXPRS = {"BLOCK", "BLOCK_D", "EPS", "EPS2", "STAGES", "WANT_GRAD", "WITH_ANGLE", "WITH_DISTANCE"}


def variants():
    """(name, kernel, scalar types, constexprs, num_warps) as launched by :mod:`.functions`."""
    ints = {"N": "i32", "LD": "i32", "D": "i32", "DS": "i32", "DT": "i32", "STRIDE": "i32",
            "STRIDE_S": "i32", "STRIDE_T": "i32", "anchors_per_program": "i32", "stagger": "i32"}
    out = [
        ("pair_geometry", K.pair_geometry_kernel, ints,
         dict(BLOCK=PAIR_BLOCK, EPS=K.EPS, EPS2=K.EPS**2, WITH_ANGLE=True, WITH_DISTANCE=True), 4),
        ("distance", K.distance_kernel, dict(ints, scale="fp32"), dict(BLOCK=PAIR_BLOCK, EPS=K.EPS, WANT_GRAD=True), 4),
        ("gradient", K.gradient_kernel, dict(ints, dist_scale="fp32"),
         dict(BLOCK=GRAD_BLOCK, BLOCK_D=64, EPS=K.EPS, WITH_DISTANCE=True), 4),
    ]
    for want_grad in (True, False):
        out.append((f"angle(WANT_GRAD={want_grad})", K.angle_kernel, dict(ints, scale="fp32"),
                    dict(BLOCK=ANGLE_BLOCK, STAGES=ANGLE_STAGES, WANT_GRAD=want_grad), ANGLE_WARPS))
    return out


def _inner_loop_stats(sass: str):
    """Instruction count and opcode histogram of the longest backward-branch loop of a SASS listing."""
    ins = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    index = {a: i for i, (a, _) in enumerate(ins)}
    best = None
    for i, (addr, text) in enumerate(ins):
        if "BRA" not in text:
            continue
        m = re.search(r"0x([0-9a-f]+)", text.split("BRA", 1)[1])
        if m and int(m.group(1), 16) < addr and int(m.group(1), 16) in index:
            body = ins[index[int(m.group(1), 16)]: i + 1]
            if best is None or len(body) > len(best):
                best = body
    if not best:
        return None
    ops = collections.Counter(t.split()[1 if t.startswith("@") else 0].split(".")[0] for _, t in best)
    return {"instructions": len(best), "top_opcodes": dict(ops.most_common(8))}


def compile_all(arch: int = 90, divisible: bool = True) -> list[dict]:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    tools = _tools_dir()
    rows = []
    for name, fn, scalars, consts, num_warps in variants():
        sig = _signature(fn, scalars)
        attrs = {}
        # What the launcher specialises: torch's pointers and the row stride LD are multiples
        # of 16 always; N and D for the benchmark's sizes (or not: ``divisible=False``).
        attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(fn.arg_names)
                 if sig[a].startswith("*") or a == "LD" or (divisible and a in ("N", "D", "STRIDE"))}
        kernel = triton.compile(
            ASTSource(fn, signature=sig, constexprs=consts, attrs=attrs),
            target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps},
        )
        row = {"kernel": name, "arch": f"sm_{arch}", "num_warps": num_warps, "regs": None, "spill_bytes": None}
        cuobjdump = os.path.join(tools, "cuobjdump")
        if os.path.exists(cuobjdump):
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "k.cubin")
                with open(path, "wb") as f:
                    f.write(kernel.asm["cubin"])
                usage = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True).stdout
                m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
                if m:
                    row.update(regs=int(m.group(1)), spill_bytes=int(m.group(2)) + int(m.group(4)))
                if name.startswith("angle"):
                    sass = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True).stdout
                    row["inner_loop"] = _inner_loop_stats(sass)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rkd_tutorial.kernels.aot", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100/H200)")
    parser.add_argument("--no-divisibility", action="store_true", help="compile for N not a multiple of 16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = compile_all(args.arch, divisible=not args.no_divisibility)
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            loop = r.get("inner_loop")
            extra = f"  inner loop: {loop['instructions']} SASS instructions {loop['top_opcodes']}" if loop else ""
            print(f"{r['kernel']:>24} {r['arch']} warps={r['num_warps']} regs={r['regs']} spill={r['spill_bytes']}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
