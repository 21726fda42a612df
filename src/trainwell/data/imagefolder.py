"""Image-folder trees: ``train/<class>/<image>`` and ``test/<class>/<image>``, as a folder or an archive.

The tree may be a folder, or a ``.tar``, ``.tar.gz``/``.tgz`` or ``.zip`` archive (read without extracting,
see ``archives``), and may sit under one top-level folder (``mydata/train/...``). Images are files ending in
``.png``, ``.jpg`` or ``.jpeg`` (any case) at any depth below their class folder; other files and hidden
ones (a name part starting with ``.``) are ignored. Every image must share the first image's size and mode
(see ``images`` for why nothing is converted).

Classes are the sorted names of the class folders under ``train/`` that hold at least one image; ``test/``
may not have a class ``train/`` lacks. Images are ordered by name within each split.

Decoding is slow (about 3 s for 60,000 small JPEGs), so the decoded arrays are cached (see ``cache``): an
archive is keyed by its SHA-256, a folder by the names, sizes and modification times of its images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from trainwell.data import archives, cache
from trainwell.data.checksums import Checksum, KnownDigest, file_digests, mismatch_error, tree_digest
from trainwell.data.dataset import RawDataset
from trainwell.data.images import decode_images, is_image_name
from trainwell.data.sources import explicit
from trainwell.errors import DataError

SPLITS = ("train", "test")
_LAYOUT_HINT = "expected train/<class>/<image> and test/<class>/<image> (PNG or JPEG)"


def load(path: Path | None, verify: bool) -> RawDataset:
    """Read the tree at ``path`` (required). No checksums are published for such trees, so ``verify`` has
    nothing to check."""
    if path is None:
        raise DataError("dataset 'imagefolder' needs a path to a folder or archive; " + _LAYOUT_HINT)
    return read(explicit(path), dataset="imagefolder")


def read(
    path: Path,
    *,
    dataset: str,
    key: str | None = None,
    checksum: Checksum | None = None,
    known_tree: KnownDigest | None = None,
    verify: bool = False,
    check: Callable[[cache.Entry, Path], None] | None = None,
) -> RawDataset:
    """Read the tree at ``path`` (a folder or archive) through the cache, as ``dataset``.

    For an archive, ``key`` and ``checksum`` come from a caller that has already hashed (and verified) it;
    without them the archive's SHA-256 is computed here and reported unverified. A folder's checksum is the
    tree digest of its images, computed when it is decoded and kept in the cache entry (whose key changes
    with any file's size or modification time); with ``verify``, a folder whose digest is not ``known_tree``
    is refused. ``check`` validates the decoded entry before it is cached (e.g. CIFAR-10's class names).
    """
    kind = archives.container_kind(path)
    if kind == "folder":
        fingerprint = archives.folder_fingerprint(path, is_image_name)
        key = "folder:" + hashlib.sha256(repr(fingerprint).encode()).hexdigest()
    elif key is None:
        digest = file_digests(path, ("sha256",))["sha256"]
        key, checksum = f"sha256:{digest}", Checksum("sha256", digest, verified=False)

    def build() -> cache.Entry:
        entry = decode_tree(archives.read_files(path, is_image_name), path)
        if check is not None:
            check(entry, path)
        return entry

    entry, entry_path, _ = cache.cached(dataset, key, build)
    if kind == "folder":
        digest = entry.info["tree"]
        verified = known_tree is not None and digest == known_tree.value
        if verify and known_tree is not None and not verified:
            raise mismatch_error(path, [known_tree], {known_tree.algorithm: digest})
        checksum = Checksum("sha256-tree", digest, verified)
    return RawDataset(
        name=dataset,
        x_train=entry.x_train,
        y_train=entry.y_train,
        x_test=entry.x_test,
        y_test=entry.y_test,
        classes=entry.classes,
        path=path,
        format=entry.info["format"],
        checksum=checksum,
        cache_entry=entry_path,
    )


def decode_tree(files: Mapping[str, bytes], where: Path) -> cache.Entry:
    """Decode the image files of a tree (relative name to content) into a cache entry."""
    prefix = _root_prefix(files, where)
    picked: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}  # split -> [(name, class)]
    for name in sorted(files):
        parts = name[len(prefix) :].split("/") if name.startswith(prefix) else []
        if len(parts) >= 3 and parts[0] in picked:
            picked[parts[0]].append((name, parts[1]))
    for split in SPLITS:
        if not picked[split]:
            raise DataError(f"{where}: no images under {prefix}{split}/<class>/; {_LAYOUT_HINT}")
    classes = tuple(sorted({cls for _, cls in picked["train"]}))
    extra = sorted({cls for _, cls in picked["test"]} - set(classes))
    if extra:
        raise DataError(
            f"{where}: test/ has class folders that train/ lacks: {', '.join(extra)}; every test class needs "
            "training images (or remove those folders)"
        )
    index = {cls: i for i, cls in enumerate(classes)}
    names = [name for split in SPLITS for name, _ in picked[split]]
    pixels, formats = decode_images([files[n] for n in names], names, where)
    n_train = len(picked["train"])
    labels = np.array([index[cls] for split in SPLITS for _, cls in picked[split]], dtype=np.int64)
    return cache.Entry(
        x_train=pixels[:n_train],
        y_train=labels[:n_train],
        x_test=pixels[n_train:],
        y_test=labels[n_train:],
        classes=classes,
        info={
            "format": f"image folders, {'+'.join(sorted(formats))}",
            # The digest of the images relative to the tree's root, as `sha256sum` would list them there.
            "tree": tree_digest((n[len(prefix) :], files[n]) for n in names),
        },
    )


def _root_prefix(names: Mapping[str, bytes], where: Path) -> str:
    """``""`` when ``train/``/``test/`` are at the top of the tree, ``"top/"`` when all sit in one folder."""
    if any(n.startswith(("train/", "test/")) for n in names):
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        (top,) = tops
        if any(n.startswith((f"{top}/train/", f"{top}/test/")) for n in names):
            return f"{top}/"
    raise DataError(f"{where}: no train/ and test/ folders found; {_LAYOUT_HINT}")
