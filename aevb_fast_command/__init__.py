"""The `aevb-fast` command's entry point. It lives outside the aevb_fast package so that a Ctrl-C
while aevb_fast and torch load (about 1.5 s, before any of the command's own code runs) ends in
one line and exit code 130 instead of a traceback. The interrupt is held until the imports end:
raised inside a C extension's initialisation (numpy's, torch's) it would surface as an unrelated
ImportError, or leave a half-initialised module behind."""

import signal
import sys


def main() -> int:
    interrupted = []
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # a background job: Ctrl-C is not for it
        from aevb_fast.cli import main as command

        return command()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from aevb_fast.cli import main as command
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("\naevb-fast: interrupted (Ctrl-C) while starting; nothing was done", file=sys.stderr)
        return 130
    return command()
