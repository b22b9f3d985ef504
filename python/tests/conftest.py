"""Shared test setup: the repository root, the Rust binary, and skipping that fails under CI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Small tests on a shared 2-core machine: one intra-op thread keeps runs comparable and quick.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def skip_or_fail(reason: str) -> None:
    """Skips with ``reason``; under CI (env CI set) a missing input fails instead."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: this test must run)")
    pytest.skip(reason)
