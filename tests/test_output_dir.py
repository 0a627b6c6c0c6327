"""Output directories never lose the user's files: refuse what is not a flexllm project (exit 2, before any
model is loaded), keep the user's entries with --force, lock the directory, honour the umask."""

import os
import stat
import time
from pathlib import Path

import pytest

from flexllm_plugin.atomic_dir import OutputDirError, atomic_directory, output_lock
from flexllm_plugin.cli import main
from flexllm_plugin.resources import config_path

MARKER = "flexllm_build.json"
TINY = str(config_path("tiny.yaml"))


@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to load or calibrate a model fails the test."""
    import brevitas_models.build as build

    def forbidden(*a, **k):
        raise AssertionError("a model was built")
    monkeypatch.setattr(build, "build_model", forbidden)


def _fill(tmp, names=("firmware", "Makefile", MARKER)):
    for n in names:
        if "." in n or n[0].isupper():
            (tmp / n).write_text(n)
        else:
            (tmp / n).mkdir()


def test_out_at_a_directory_with_a_user_file_exits_2_and_keeps_it(tmp_path, no_model, capsys):
    out = tmp_path / "work"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    t0 = time.perf_counter()
    assert main(["build", TINY, "--out", str(out), "--quiet"]) == 2
    assert time.perf_counter() - t0 < 2
    err = capsys.readouterr().err
    assert "is not empty and is not a flexllm project" in err and "notes.txt" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "my notes" and sorted(os.listdir(out)) == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]      # no temporary or lock left


def test_out_at_a_file_and_dot_are_refused(tmp_path, no_model, capsys, monkeypatch):
    f = tmp_path / "report.pdf"
    f.write_bytes(b"%PDF")
    assert main(["build", TINY, "--out", str(f), "--quiet", "--force"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err and f.read_bytes() == b"%PDF"
    # `--out .` in a directory holding the config and a scratch document
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(config_path("tiny.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["build", "cfg.yaml", "--out", ".", "--quiet"]) == 2
    assert cfg.is_file() and f.is_file()


def test_force_merges_and_keeps_user_entries_then_rebuilds_in_place(tmp_path):
    out = tmp_path / "prj"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with atomic_directory(out, MARKER, force=True) as tmp:
        _fill(tmp)
        (tmp / MARKER).write_text('{"entries": ["Makefile", "firmware", "flexllm_build.json"]}')
    assert sorted(os.listdir(out)) == ["Makefile", "firmware", MARKER, "notes.txt"]
    # the next build replaces the project's entries only (no --force needed: it is a flexllm project)
    with atomic_directory(out, MARKER) as tmp:
        _fill(tmp, ("weights", "Makefile", MARKER))
        (tmp / MARKER).write_text('{"entries": ["Makefile", "weights", "flexllm_build.json"]}')
    assert sorted(os.listdir(out)) == ["Makefile", MARKER, "notes.txt", "weights"]
    assert (out / "notes.txt").read_text() == "mine"


def test_force_refuses_to_overwrite_a_user_file(tmp_path):
    out = tmp_path / "prj"
    out.mkdir()
    (out / "Makefile").write_text("user's")
    with pytest.raises(OutputDirError, match="would overwrite Makefile"):
        with atomic_directory(out, MARKER, force=True) as tmp:
            _fill(tmp)
    assert os.listdir(out) == ["Makefile"] and (out / "Makefile").read_text() == "user's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prj"]


def test_previous_project_is_replaced_and_empty_dir_used(tmp_path):
    out = tmp_path / "prj"
    out.mkdir()                                  # empty: used
    with atomic_directory(out, MARKER) as tmp:
        _fill(tmp)
    with atomic_directory(out, MARKER) as tmp:   # a project (older marker without entries): replaced whole
        _fill(tmp, ("hls", MARKER))
    assert sorted(os.listdir(out)) == [MARKER, "hls"]


def test_failed_build_leaves_the_previous_project(tmp_path):
    out = tmp_path / "prj"
    with atomic_directory(out, MARKER) as tmp:
        _fill(tmp)
    with pytest.raises(RuntimeError):
        with atomic_directory(out, MARKER) as tmp:
            _fill(tmp, ("hls", MARKER))
            raise RuntimeError("boom")
    assert sorted(os.listdir(out)) == ["Makefile", "firmware", MARKER]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prj"]


def test_second_build_to_a_locked_directory_fails_clearly(tmp_path, no_model, capsys):
    out = tmp_path / "prj"
    with output_lock(out):
        with pytest.raises(OutputDirError, match=r"another flexllm build is writing .*prj"):
            with atomic_directory(out, MARKER):
                pass
        assert main(["build", TINY, "--out", str(out), "--quiet"]) == 2
        assert "another flexllm build is writing" in capsys.readouterr().err
    with atomic_directory(out, MARKER) as tmp:   # released: works
        _fill(tmp)
    assert not (tmp_path / ".prj.lock").exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o002, 0o775)])
def test_project_directory_honours_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_directory(tmp_path / "prj", MARKER) as tmp:
            _fill(tmp)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "prj").stat().st_mode) == mode


def test_read_only_parent_is_one_line_exit_2(tmp_path, no_model, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["build", TINY, "--out", str(ro / "prj"), "--quiet"]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_os_errors_are_one_line_exit_2(tmp_path, no_model, capsys, monkeypatch):
    """A read-only filesystem (simulated: root ignores permissions) is a user error, not a traceback."""
    import tempfile

    def denied(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", str(dir))
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    assert main(["build", TINY, "--out", str(tmp_path / "prj"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flexllm: error: ") and "Permission denied" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_empty_directory_and_working_directory_keep_their_inode(tmp_path, monkeypatch):
    """`--out .` in an empty directory, or in a previous project: the shell's working directory stays valid."""
    out = tmp_path / "here"
    out.mkdir()
    inode = out.stat().st_ino
    monkeypatch.chdir(out)
    with atomic_directory(Path("."), MARKER) as tmp:
        _fill(tmp)
    assert out.stat().st_ino == inode and sorted(os.listdir(out)) == ["Makefile", "firmware", MARKER]
    with atomic_directory(Path("."), MARKER) as tmp:      # a previous project, rebuilt from inside it
        _fill(tmp, ("hls", MARKER))
    assert out.stat().st_ino == inode and sorted(os.listdir(out)) == [MARKER, "hls"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]
