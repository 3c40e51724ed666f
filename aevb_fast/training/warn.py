"""Warnings that point at the user's line (their call of ``train``, ``Trainer`` or ``run``), not at
the trainer's own code, so that the message names the place to change and warns once per place."""

from __future__ import annotations

import os
import sys
import warnings

_LIBRARY_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # aevb_fast/


def warn_user(warning: Warning) -> None:
    """``warnings.warn(warning)`` with the stacklevel of the first frame outside aevb_fast."""
    frame, level = sys._getframe(1), 2  # level 2: warn_user's caller
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)
