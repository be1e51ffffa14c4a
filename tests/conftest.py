"""Fixtures shared by several test files."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def umask():
    """``os.umask``, for setting the process umask in one test; the old one is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)
