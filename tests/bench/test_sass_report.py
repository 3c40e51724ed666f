""".ci/sass_report.py's reading of cuobjdump's output (the compile itself needs nvcc and is run by
hand: python .ci/sass_report.py)."""

from testing import load_script

sass_report = load_script(".ci/sass_report.py")

SASS = """
\t\tFunction : _Z6kernelPf
        /*0000*/                   LDC R1, c[0x0][0x28] ;   /* 0x00000a00ff017b82 */
        /*0010*/                   S2R R2, SR_TID.X ;        /* 0x0000000000027919 */
        /*0020*/                   FFMA R3, R2, R2, R1 ;     /* 0x0 */
        /*0030*/                   FMUL R4, R3, R3 ;         /* 0x0 */
        /*0040*/                   MUFU.EX2 R5, R4 ;         /* 0x0 */
        /*0050*/                   IMAD.WIDE.U32 R6, R5, 0x4, R2 ;   /* 0x0 */
        /*0060*/              @!P0 BRA 0x20 ;                /* 0x0 */
        /*0070*/                   CALL.REL.NOINC 0x100 ;    /* 0x0 */
        /*0080*/                   EXIT ;                    /* 0x0 */
        /*0090*/                   BRA 0x90;                 /* 0x0 */
"""
RESOURCES = """
 Function _Z6kernelPf:
  REG:40 STACK:0 SHARED:0 LOCAL:8 CONSTANT[0]:720 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_the_main_loop_and_its_mix():
    kernels = sass_report.parse_sass(SASS)
    instructions = kernels["_Z6kernelPf"]
    assert len(instructions) == 10
    loop = sass_report.largest_loop(instructions)  # 0x20..0x60: the self-branch at 0x90 spans nothing
    assert [address for address, *_ in loop] == [0x20, 0x30, 0x40, 0x50, 0x60]
    assert sass_report.mix(loop) == {"FFMA": 1, "FMUL": 1, "FADD": 0, "MUFU": 1, "64-bit int": 1, "calls": 0}
    assert sass_report.hot_loop(instructions) == []  # no global load in the loop
    streaming = instructions[:5] + [(0x50, "LDG.E.128", " R4, desc[UR4][R2.64] "), instructions[6]]
    hot = sass_report.hot_loop(streaming)
    assert [a for a, *_ in hot] == [0x20, 0x30, 0x40, 0x50, 0x60]
    assert sass_report.bytes_moved(hot) == 16
    assert sass_report.bytes_moved([(0, "STG.E", ""), (1, "LDG.E.U16", ""), (2, "LDG.E.64", "")]) == 14
    # next to 128-bit packs, a narrower access is a per-row value: not counted
    assert sass_report.bytes_moved([(0, "LDG.E.128", ""), (1, "LDG.E", ""), (2, "STG.E.128", "")]) == 32


def test_the_hot_loop_is_the_inner_loop_over_full_inputs():
    """nvcc unswitches a row's loop on a broadcast input: the copy for full inputs (two packs a
    step) is the hot loop, not the shorter broadcast copy or the loop over rows around both."""
    ins = [
        (0x00, "S2R", " R0, SR_TID.X "),
        (0x10, "LDG.E", " R1, desc[UR4][R2.64] "),  # broadcast copy: one value and one pack
        (0x20, "LDG.E.128", " R4, desc[UR4][R2.64] "),
        (0x30, "FFMA", " R5, R4, R4, R1 "),
        (0x40, "BRA", " 0x10 "),
        (0x50, "LDG.E.128", " R4, desc[UR4][R2.64] "),  # full copy: two packs
        (0x60, "LDG.E.128", " R8, desc[UR4][R6.64] "),
        (0x70, "FFMA", " R5, R4, R8, R5 "),
        (0x80, "FFMA", " R5, R5, R8, R5 "),
        (0x90, "LDG.E", " R1, desc[UR4][R2.64] "),  # its cold per-row value
        (0xA0, "BRA", " 0x50 "),
        (0xB0, "STG.E", " desc[UR4][R2.64], R5 "),
        (0xC0, "BRA", " 0x00 "),  # the loop over rows
    ]
    hot = sass_report.hot_loop(ins)
    assert [a for a, *_ in hot] == [0x50, 0x60, 0x70, 0x80, 0x90, 0xA0]
    assert sass_report.bytes_moved(hot) == 32
    assert len(sass_report.largest_loop(ins)) == len(ins)
    assert sass_report.parse_resources(RESOURCES) == {"_Z6kernelPf": {"registers": 40, "stack": 0, "local": 8}}


def test_kernel_names_are_shortened():
    demangled = (
        "void aevb_fast::cuda::(anonymous namespace)::row_sum_kernel<1, 256, aevb_fast::cuda::"
        "(anonymous namespace)::BernoulliForward<c10::BFloat16> >(long, float*)"
    )
    assert sass_report.short_name(demangled) == "row_sum_kernel<1, 256, BernoulliForward<bf16>>"
