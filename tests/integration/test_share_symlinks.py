"""Symbolic links on the instrument share are never followed (issue 13, item 4).

Anyone who can write the share could otherwise plant ``x.raw -> /etc/shadow`` (or a
symlinked ``NAME.d``, a symlinked ``.wiff.scan``, a symlinked subfolder of a ``.d``) and
have rawvault copy any file the worker can read into the backup and into S3. Through the
watcher (``register_new_raw_files``), ``files_in_set`` and the checksum step, with the
real MongoDB wire server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rawvault import pipeline
from rawvault.watcher import register_new_raw_files
from shared.db.interface import get_raw_file
from shared.db.models import RawFile
from shared.instrument_types import INSTRUMENT_TYPES, InstrumentType, RawFileSetError
from tests.data_factory import KIB, make_bruker, make_sciex, make_thermo, write_bytes
from tests.pipeline_env import PipelineEnv, active, write_pipeline_env

SYMLINK_ERROR = r"is a symbolic link.*rawvault never follows symbolic links"


@pytest.fixture
def env(tmp_path: Path, mongo_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PipelineEnv]:
    with active(write_pipeline_env(tmp_path / "env"), monkeypatch) as environment:
        yield environment


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside every instrument folder with a 'secret' file and a 'secret' folder in it."""
    folder = tmp_path / "outside"
    write_bytes(folder / "secret.txt", 4 * KIB, seed=7)
    write_bytes(folder / "secret_dir" / "analysis.tdf_bin", 4 * KIB, seed=8)
    return folder


def registered_names(instrument_id: str) -> list[str]:
    return sorted(raw_file.original_name for raw_file in RawFile.objects(instrument_id=instrument_id))


def assert_set_refused(env: PipelineEnv, raw_file_id: str, kind: InstrumentType, raw_file: Path, link: Path) -> None:
    """Listing the set refuses the symlink and names it; the checksum of the raw file refuses it too."""
    with pytest.raises(RawFileSetError, match=SYMLINK_ERROR) as raised:
        kind.files_in_set(raw_file)
    assert str(link) in str(raised.value)
    with pytest.raises(RawFileSetError, match=SYMLINK_ERROR):
        pipeline.checksum_raw_file(raw_file_id, env.settings)


def test_symlinked_raw_file_to_outside_is_neither_registered_nor_read(
    env: PipelineEnv, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = env.instrument_path("thermo1")
    make_thermo(folder, "real.raw", size=KIB)
    link = folder / "evil.raw"
    link.symlink_to(outside / "secret.txt")

    with caplog.at_level(logging.WARNING):
        register_new_raw_files("thermo1", env.settings)

    assert registered_names("thermo1") == ["real.raw"]
    assert f"{link} is a symbolic link" in caplog.text and "it is not registered" in caplog.text, caplog.text
    with pytest.raises(RawFileSetError, match=SYMLINK_ERROR) as raised:
        INSTRUMENT_TYPES["thermo"].files_in_set(link)
    assert str(link) in str(raised.value)
    assert "Replace it with the real file" in str(raised.value)


def test_symlink_inside_the_folder_and_dangling_symlinks_are_refused_too(env: PipelineEnv) -> None:
    folder = env.instrument_path("thermo1")
    target = make_thermo(folder, "real.raw", size=KIB)
    (folder / "alias.raw").symlink_to(target.name)  # relative, stays inside the folder: still never followed
    (folder / "dangling.raw").symlink_to(folder / "gone.raw")

    register_new_raw_files("thermo1", env.settings)

    assert registered_names("thermo1") == ["real.raw"]
    for name in ("alias.raw", "dangling.raw"):
        with pytest.raises(RawFileSetError, match=SYMLINK_ERROR):
            INSTRUMENT_TYPES["thermo"].files_in_set(folder / name)


def test_symlinked_sciex_sibling_stops_the_checksum_with_a_clear_error(env: PipelineEnv, outside: Path) -> None:
    folder = env.instrument_path("zeno1")
    wiff = make_sciex(folder, "run.wiff")
    scan = folder / "run.wiff.scan"
    scan.unlink()
    scan.symlink_to(outside / "secret.txt")
    (raw_file_id,) = register_new_raw_files("zeno1", env.settings)

    assert_set_refused(env, raw_file_id, INSTRUMENT_TYPES["sciex"], wiff, scan)
    raw_file = get_raw_file(raw_file_id)
    assert raw_file.status == "error" and "run.wiff.scan" in raw_file.status_details
    assert raw_file.file_info == {}


def test_symlinked_bruker_folder_is_neither_registered_nor_listed(env: PipelineEnv, outside: Path) -> None:
    folder = env.instrument_path("tims1")
    make_bruker(folder, "real.d")
    link = folder / "evil.d"
    link.symlink_to(outside / "secret_dir", target_is_directory=True)

    register_new_raw_files("tims1", env.settings)

    assert registered_names("tims1") == ["real.d"]
    with pytest.raises(RawFileSetError, match=SYMLINK_ERROR) as raised:
        INSTRUMENT_TYPES["bruker"].files_in_set(link)
    assert str(link) in str(raised.value)


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_symlink_inside_a_bruker_set_is_refused_not_skipped(env: PipelineEnv, outside: Path, kind: str) -> None:
    """Path.rglob neither enters a symlinked subfolder nor reports it: the set was silently incomplete."""
    folder = env.instrument_path("tims1")
    run = make_bruker(folder, "run.d")
    link = run / "extra"
    if kind == "folder":
        link.symlink_to(outside / "secret_dir", target_is_directory=True)
    else:
        link.symlink_to(outside / "secret.txt")
    (raw_file_id,) = register_new_raw_files("tims1", env.settings)

    assert_set_refused(env, raw_file_id, INSTRUMENT_TYPES["bruker"], run, link)
    assert get_raw_file(raw_file_id).status == "error"


def test_an_instrument_folder_reached_through_a_symlink_still_works(tmp_path: Path, mongo_uri: str) -> None:
    """Only entries on the share are never followed; the configured folder itself may be a mount symlink."""
    real = tmp_path / "mnt" / "thermo1"
    make_thermo(real, "a.raw", size=KIB)
    make_bruker(tmp_path / "mnt" / "tims1", "b.d")
    env = write_pipeline_env(tmp_path / "env")
    for instrument_id in ("thermo1", "tims1"):
        configured = env.instrument_path(instrument_id)
        configured.rmdir()
        configured.symlink_to(tmp_path / "mnt" / instrument_id, target_is_directory=True)

    assert register_new_raw_files("thermo1", env.settings) == ["a.raw"]
    assert register_new_raw_files("tims1", env.settings) == ["b.d"]
    bruker_set = INSTRUMENT_TYPES["bruker"].files_in_set(env.instrument_path("tims1") / "b.d")
    assert bruker_set and all(os.path.realpath(p).startswith(str(tmp_path / "mnt" / "tims1")) for p in bruker_set)


def test_unreadable_subfolder_of_a_bruker_set_fails_instead_of_being_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Path.rglob skipped a folder it could not read (PermissionError): the set was silently incomplete."""
    run = make_bruker(tmp_path, "run.d")
    locked = run / "locked"
    write_bytes(locked / "data.bin", KIB, seed=3)
    real_scandir = os.scandir

    def scandir(path: object) -> object:  # the tests run as root, which reads every folder: simulate chmod 0
        if Path(os.fspath(path)) == locked:  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(RawFileSetError, match=r"locked of raw file run\.d cannot be read \(Permission denied\)"):
        INSTRUMENT_TYPES["bruker"].files_in_set(run)
