"""A restore never writes through a planted symlink, outside its folder, or into a file another restore published.

Issue 13 item 2, through the command line as a user runs it (``scripts/rawvault.sh restore`` as a
subprocess) against moto's S3 server and the MongoDB wire server. Where two restores must
interleave in a chosen order, each talks to S3 through its own :class:`tests.s3_proxy.S3Proxy`,
which holds its GET requests until the test releases them (and can corrupt what they read).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest

pytest.register_assert_rewrite("tests.s3_fixtures", "tests.restore_fixtures")  # imported before pytest loads them

from tests.restore_fixtures import (  # noqa: E402
    BRUKER,
    THERMO,
    assert_identical_tree,
    back_up,
    files_under,
    run_cli,
    start_cli,
    through,
)
from tests.s3_fixtures import make_bruker_set, make_thermo_file  # noqa: E402
from tests.s3_proxy import Request, S3Proxy, flip_first_byte  # noqa: E402

pytest_plugins = ["tests.s3_fixtures", "tests.restore_fixtures"]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OLD_TEMP_SUFFIX = ".rawvault-restore"
WAIT = 60  # seconds a process may take to reach the point a test waits for


def data_get(name: str) -> Callable[[Request], bool]:
    """A hold rule: GETs of the object whose key ends in ``name`` (not its manifest)."""
    return lambda request: request.method == "GET" and request.path.endswith(name)


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"timed out waiting for {what}"


def test_a_symlink_planted_at_the_old_temporary_name_leaves_its_victim_untouched(
    mongo_uri, env, s3_client, tmp_path
) -> None:
    thermo_id, folder, _paths = back_up(env, s3_client, "thermo1", make_thermo_file)
    victim = tmp_path / "outside" / "victim.conf"
    victim.parent.mkdir()
    victim.write_bytes(b"precious configuration")
    target = tmp_path / "restore"
    target.mkdir()
    planted = target / f".{THERMO}{OLD_TEMP_SUFFIX}"  # the name every restore used to write to
    planted.symlink_to(victim)

    done = run_cli("restore", thermo_id, str(target), "--progress-interval", "0")

    assert done.returncode == 0, done.stderr
    assert victim.read_bytes() == b"precious configuration"
    restored = target / THERMO
    assert not restored.is_symlink() and restored.read_bytes() == (folder / THERMO).read_bytes()
    assert planted.is_symlink()  # someone else's entry: left as it was
    umask = os.umask(0)
    os.umask(umask)
    assert restored.stat().st_mode & 0o777 == 0o666 & ~umask  # 0o600 only while it was a temporary file
    assert [p for p in files_under(target) if p.startswith(".") and p != planted.name] == []


def test_a_second_restore_never_writes_into_the_file_the_first_one_published(
    mongo_uri, env, s3_client, s3_server, tmp_path
) -> None:
    """Two restores of one raw file into one folder; the second reads corrupted bytes after the first published."""
    thermo_id, folder, _paths = back_up(env, s3_client, "thermo1", make_thermo_file)
    target = tmp_path / "restore"
    original = (folder / THERMO).read_bytes()
    with S3Proxy(s3_server.endpoint_url) as first_s3, S3Proxy(s3_server.endpoint_url) as second_s3:
        first_hold = first_s3.hold(data_get(THERMO))
        second_hold = second_s3.hold(data_get(THERMO), corrupt=flip_first_byte)
        first = start_cli("restore", thermo_id, str(target), env_overrides=through(first_s3))
        wait_for(first_hold.seen, "the first restore to start downloading")
        second = start_cli("restore", thermo_id, str(target), env_overrides=through(second_s3))
        wait_for(second_hold.seen, "the second restore to start downloading")

        first_hold.release()
        _first_out, first_err = first.communicate(timeout=WAIT)
        assert first.returncode == 0, first_err
        assert (target / THERMO).read_bytes() == original

        second_hold.release()
        _out, second_err = second.communicate(timeout=WAIT)

    assert (target / THERMO).read_bytes() == original  # the published file was never written to again
    assert second.returncode == 1, second_err
    assert "Traceback" not in second_err
    assert f"does not hold {THERMO}" in second_err and "nothing was written under its name" in second_err
    assert files_under(target) == [THERMO]  # no temporary file left behind


def test_two_concurrent_restores_of_one_raw_file_end_with_the_right_file(
    mongo_uri, env, s3_client, s3_server, tmp_path
) -> None:
    """The second restore starts while the first has written one part and waits for the others."""
    thermo_id, folder, paths = back_up(env, s3_client, "thermo1", make_thermo_file)
    target = tmp_path / "restore"
    with S3Proxy(s3_server.endpoint_url) as first_s3, S3Proxy(s3_server.endpoint_url) as second_s3:
        later_parts = first_s3.hold(lambda r: data_get(THERMO)(r) and not (r.range or "").startswith("bytes=0-"))
        second_hold = second_s3.hold(data_get(THERMO))
        first = start_cli("restore", thermo_id, str(target), env_overrides=through(first_s3))
        wait_for(later_parts.seen, "the first restore to ask for its later parts")
        deadline = time.monotonic() + WAIT
        while not [r for r in first_s3.gets(THERMO) if (r.range or "").startswith("bytes=0-") and r.status]:
            assert time.monotonic() < deadline, "the first part never arrived"
            time.sleep(0.05)
        time.sleep(0.5)  # the first part is written to the first restore's temporary file
        second = start_cli("restore", thermo_id, str(target), env_overrides=through(second_s3))
        wait_for(second_hold.seen, "the second restore to start downloading")

        later_parts.release()
        first_out, first_err = first.communicate(timeout=WAIT)
        second_hold.release()
        second_out, second_err = second.communicate(timeout=WAIT)

    for _out, err, process in ((first_out, first_err, first), (second_out, second_err, second)):
        assert "Traceback" not in err, err
        assert process.returncode == 0, err
    assert_identical_tree(folder, paths, target)
    outputs = sorted([first_out, second_out])
    assert "1 file(s) downloaded and verified" in "".join(outputs)
    assert "1 already there and identical" in "".join(outputs)


def test_a_symlinked_subfolder_planted_during_the_restore_is_refused(
    mongo_uri, env, s3_client, s3_server, tmp_path
) -> None:
    bruker_id, _folder, _paths = back_up(env, s3_client, "tims1", make_bruker_set)
    target = tmp_path / "restore"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = target / BRUKER / "1234.m" / "submethods"

    def plant(_request: Request) -> None:
        # The first file of the set is being downloaded; its folder 1234.m exists, submethods does not yet.
        planted.symlink_to(elsewhere, target_is_directory=True)

    with S3Proxy(s3_server.endpoint_url) as proxy:
        proxy.hold(data_get("method file.method"), on_arrival=plant).release()
        done = run_cli("restore", bruker_id, str(target), env_overrides=through(proxy))

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert f"{planted} is a symbolic link" in done.stderr and str(elsewhere) in done.stderr
    assert list(elsewhere.iterdir()) == []  # nothing written through it
    assert planted.is_symlink()


def test_a_symlink_in_the_target_tree_pointing_outside_is_refused_before_anything_is_written(
    mongo_uri, env, s3_client, tmp_path
) -> None:
    bruker_id, folder, paths = back_up(env, s3_client, "tims1", make_bruker_set)
    target = tmp_path / "restore"
    target.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / BRUKER).symlink_to(elsewhere, target_is_directory=True)

    done = run_cli("restore", bruker_id, str(target))

    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"{target / BRUKER} is a symbolic link to {elsewhere}" in done.stderr
    assert "outside the target folder" in done.stderr
    assert list(elsewhere.iterdir()) == []
    # Without the symlink the same restore completes.
    (target / BRUKER).unlink()
    again = run_cli("restore", bruker_id, str(target))
    assert again.returncode == 0, again.stderr
    assert_identical_tree(folder, paths, target)
