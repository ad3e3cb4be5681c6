"""Shared pytest fixtures: keep tests on CPU and small."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Two cores are shared by the whole suite (and by mediapipe's own threads): one torch thread
# per test process avoids oversubscription, which made small CPU tests 100x slower.
torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real recordings (../shared/data); tests using it skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared recordings (../shared/data) are not present")
    return SHARED_DATA
