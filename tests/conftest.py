"""The fixtures: tiny synthetic data and a tiny random BERT teacher, made fresh (`helpers`)."""

from pathlib import Path

import pytest

from helpers import write_tarball, write_tiny_encoder, write_tiny_teacher


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return write_tarball(tmp_path / "aclImdb_v1.tar.gz")


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    return write_tiny_teacher(tmp_path_factory.mktemp("teacher") / "teacher")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("encoder") / "base-encoder")
