"""Unsafe archive members are refused, naming the archive and the member, and nothing is written anywhere."""

from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainwell.data import archives, load_dataset
from trainwell.errors import DataError


def good_members(make) -> list[tuple[tarfile.TarInfo, bytes]]:
    png = make.png_bytes(np.zeros((4, 4, 3), np.uint8))
    return [(tarfile.TarInfo(f"{s}/cat/0.png"), png) for s in ("train", "test")]


def assert_refused(path: Path, member: str, why: str, tmp_path: Path, make) -> None:
    before = make.files_under(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset({"dataset": "imagefolder", "path": str(path)})
    message = str(e.value)
    assert message.startswith(f"{path}: refusing member {member!r}: {why}")
    assert "nothing was extracted or written" in message
    assert make.files_under(tmp_path) == before  # no cache entry, no extracted file, no temporary file


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../x.png", r"it points outside the archive ('..')"),
        ("train/../../x.png", r"it points outside the archive ('..')"),
        ("/tmp/x.png", "an absolute path"),
        ("..\\x.png", r"it points outside the archive ('..')"),
    ],
)
def test_tar_members_outside_the_archive_are_refused(make, tmp_path, member, why):
    png = make.png_bytes(np.zeros((4, 4, 3), np.uint8))
    path = make.tar_with(tmp_path / "evil.tar.gz", [*good_members(make), (tarfile.TarInfo(member), png)])
    assert_refused(path, member, why, tmp_path, make)


@pytest.mark.parametrize(
    ("info", "why"),
    [
        (link("train/cat/1.png", "/etc/passwd", tarfile.SYMTYPE), "a symbolic link to '/etc/passwd'"),
        (
            link("train/cat/1.png", "../../secret.png", tarfile.SYMTYPE),
            "a symbolic link to '../../secret.png'",
        ),
        (link("train/cat/1.png", "train/cat/0.png", tarfile.LNKTYPE), "a hard link to 'train/cat/0.png'"),
    ],
)
def test_tar_links_are_refused(make, tmp_path, info, why):
    path = make.tar_with(tmp_path / "links.tar", [*good_members(make), (info, None)], mode="w")
    assert_refused(path, info.name, why, tmp_path, make)


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_devices_and_fifos_are_refused(make, tmp_path, kind):
    info = tarfile.TarInfo("train/cat/dev")
    info.type = kind
    path = make.tar_with(tmp_path / "dev.tar", [*good_members(make), (info, None)], mode="w")
    assert_refused(path, "train/cat/dev", "a device or FIFO, not a regular file", tmp_path, make)


def test_a_member_twice_is_refused(make, tmp_path):
    members = good_members(make)
    path = make.tar_with(tmp_path / "twice.tar", [*members, members[0]], mode="w")
    assert_refused(path, "train/cat/0.png", "it appears twice", tmp_path, make)


@pytest.mark.parametrize(
    ("member", "why"), [("../x.png", r"it points outside"), ("/x.png", "an absolute path")]
)
def test_zip_members_outside_the_archive_are_refused(make, tmp_path, member, why):
    path = tmp_path / "evil.zip"
    png = make.png_bytes(np.zeros((4, 4, 3), np.uint8))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/cat/0.png", png)
        zf.writestr("test/cat/0.png", png)
        zf.writestr(zipfile.ZipInfo(member), png)  # ZipInfo keeps the name as given
    assert_refused(path, member, why, tmp_path, make)


def test_zip_symlinks_are_refused(make, tmp_path):
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/cat/0.png", make.png_bytes(np.zeros((4, 4, 3), np.uint8)))
        info = zipfile.ZipInfo("test/cat/0.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16  # how Info-ZIP stores a symbolic link
        zf.writestr(info, "/etc/passwd")
    assert_refused(path, "test/cat/0.png", "a symbolic link", tmp_path, make)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar", ".zip"])
def test_a_truncated_archive_is_an_error_naming_the_file(make, tmp_path, suffix):
    tree = make.write_tree(
        tmp_path / "tree", {s: {"cat": list(make.pattern(30, 16, 16, 3))} for s in ("train", "test")}
    )
    full = (
        make.zip_folder(tree, tmp_path / "full.zip")
        if suffix == ".zip"
        else make.tar_folder(tree, tmp_path / f"full{suffix}", mode="w:gz" if suffix == ".tar.gz" else "w")
    )
    data = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        DataError, match=rf"^{cut}: the archive is truncated or corrupt .*; fetch or copy it again"
    ):
        load_dataset({"dataset": "imagefolder", "path": str(cut)})
    assert make.files_under(tmp_path / "cache") == []


def test_a_corrupt_gzip_stream_is_an_error_naming_the_file(make, tmp_path):
    tree = make.write_tree(
        tmp_path / "tree", {s: {"cat": list(make.pattern(3, 8, 8, 3))} for s in ("train", "test")}
    )
    data = bytearray(make.tar_folder(tree, tmp_path / "ok.tar.gz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"^{bad}: the archive is truncated or corrupt"):
        load_dataset({"dataset": "imagefolder", "path": str(bad)})


def test_unsupported_file_types_and_missing_paths_are_named(tmp_path):
    odd = tmp_path / "data.rar"
    odd.write_bytes(b"Rar!")
    with pytest.raises(
        DataError, match=r"data.rar: unsupported file type; expected a folder or an archive ending in .tar"
    ):
        archives.container_kind(odd)
    with pytest.raises(DataError, match=r"nowhere does not exist; check data.path"):
        load_dataset({"dataset": "imagefolder", "path": str(tmp_path / "nowhere")})


def test_folder_symlinks_inside_the_tree_are_followed_once(make, tmp_path):
    tree = make.write_tree(
        tmp_path / "tree", {s: {"cat": list(make.pattern(2, 4, 4, 3))} for s in ("train", "test")}
    )
    (tree / "train" / "cat" / "loop").symlink_to(tree / "train")  # a cycle: must not recurse forever
    names = [n for n, _ in archives.folder_files(tree, lambda n: n.endswith(".png"))]
    assert names == ["test/cat/0000.png", "test/cat/0001.png", "train/cat/0000.png", "train/cat/0001.png"]
