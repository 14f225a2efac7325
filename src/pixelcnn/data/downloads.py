"""Where dataset files live and how missing ones arrive: the search roots, the published checksums of
every remote file, downloads written atomically, and the error that says which files to put where."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pixelcnn.errors import DataError

logger = logging.getLogger(__name__)

ENV_VAR = "PIXELCNN_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _cache_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "pixelcnn"


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder downloads go to: ``data_dir``, else ``$PIXELCNN_DATA``, else the per-user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else _cache_root()


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Every root files are looked for under, in order, without repeats."""
    roots = [Path(data_dir).expanduser()] if data_dir is not None else []
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(_cache_root())
    return list(dict.fromkeys(roots))


def has_all(folder: Path, names: tuple[str, ...]) -> bool:
    return all((folder / n).is_file() for n in names)


@dataclass(frozen=True)
class RemoteFile:
    """A file a dataset needs: its name inside the dataset folder, where to fetch it, its checksum."""

    name: str
    urls: tuple[str, ...]
    algorithm: str          # "md5" or "sha256"
    digest: str


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/")
_BINARIZED_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


def _idx_remote(mirrors: tuple[str, ...], algorithm: str, digests: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, tuple(m + n for m in mirrors), algorithm, d) for n, d in zip(IDX_FILES, digests))


# The published checksums of the original files, keyed by dataset folder.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    # sha256 of the original gzipped files (their md5s are the published f68b3c2d..., d53e105e..., 9fb629c4...,
    # ec29112d...); see the README of the shared data folder.
    "mnist": _idx_remote(_MNIST_MIRRORS, "sha256", (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")),
    # md5s published by Zalando. Debian's copies are recompressed and differ; see _idx_folder.
    "fashion_mnist": _idx_remote(_FASHION_MIRRORS, "md5", (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310")),
    # Larochelle's text files, converted once into binarized_mnist.npz.
    "binarized_mnist": tuple(RemoteFile(f"binarized_mnist_{s}.amat", (f"{_BINARIZED_URL}binarized_mnist_{s}.amat",),
                                        "sha256", d) for s, d in (
        ("train", "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        ("valid", "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        ("test", "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"))),
    "cifar10": (RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                           "md5", "c58f30108f718f92721af3b95e74349a"),),
}

# What to tell a user who must fetch the files by hand, beyond the list of files.
_MANUAL_HINTS = {
    "binarized_mnist": "binarized_mnist.npz (keys train/valid/test, packbits of 784 bits a row) may stand in "
                       "for the three .amat files.",
    "fashion_mnist": f"Or install the Debian package dataset-fashion-mnist (files in {DEBIAN_FASHION_MNIST}).",
    "cifar10": "The archive is extracted there into cifar-10-batches-py/; the extracted folder may stand in for it.",
}


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(what: str, remote: RemoteFile, actual: str) -> None:
    if actual != remote.digest:
        raise DataError(f"{what} failed its {remote.algorithm} check: expected {remote.digest}, got {actual}. "
                        "The file is corrupted or incomplete: delete it and load again to download it afresh, "
                        "or put a good copy there")


def verify(path: Path, remote: RemoteFile) -> None:
    """Raise DataError naming ``path`` unless its checksum is the published one."""
    _check_digest(str(path), remote, _file_digest(path, remote.algorithm))


def _missing_error(key: str, data_dir: str | os.PathLike | None, reason: str) -> DataError:
    """A DataError that says which files to put in which folder."""
    target = data_root(data_dir) / key
    lines = [f"{key} data not found ({reason}). Put these files in {target}/:"]
    lines += [f"  {r.name}  (from {r.urls[0]}, {r.algorithm} {r.digest})" for r in REMOTE_FILES[key]]
    if key in _MANUAL_HINTS:
        lines.append(_MANUAL_HINTS[key])
    roots = ", ".join(str(r / key) for r in search_roots(data_dir))
    lines.append(f"Looked in: {roots}. Choose the data folder with --data-dir DIR or the environment "
                 f"variable {ENV_VAR}; files are downloaded there when downloading is enabled.")
    return DataError("\n".join(lines))


def _download(key: str, data_dir: str | os.PathLike | None, download: bool) -> tuple[Path, list[Path]]:
    """Fetch the missing REMOTE_FILES[key] into ``data_root(data_dir)/key``; the folder and new files."""
    target = data_root(data_dir) / key
    if not download:
        raise _missing_error(key, data_dir, "downloading is disabled")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _missing_error(key, data_dir, f"cannot create {target}: {e.strerror}") from e
    fetched = []
    for remote in REMOTE_FILES[key]:
        if not (target / remote.name).is_file():
            _fetch(key, data_dir, remote, target / remote.name)
            fetched.append(target / remote.name)
    return target, fetched


def _fetch(key: str, data_dir: str | os.PathLike | None, remote: RemoteFile, dest: Path) -> None:
    """Download ``remote`` to ``dest``, trying each URL in turn."""
    failures = []
    for url in remote.urls:
        try:
            _fetch_url(url, remote, dest)
            return
        except (OSError, DataError) as e:       # urllib's URLError, HTTPError and timeouts are OSErrors
            failures.append(f"{url}: {e}")
    raise _missing_error(key, data_dir, "download failed: " + "; ".join(failures))


def _fetch_url(url: str, remote: RemoteFile, dest: Path) -> None:
    """Stream ``url`` into a temporary sibling of ``dest``; check it, then rename it into place."""
    logger.info("downloading %s to %s", url, dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.new(remote.algorithm, usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in _chunks_with_progress(response, dest.name):
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        _check_digest(f"{dest.name} downloaded from {url}", remote, digest.hexdigest())
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _chunks_with_progress(response, name: str) -> Iterator[bytes]:
    """The body of an HTTP response in 1 MiB chunks, with a tqdm bar when stderr is a terminal."""
    from tqdm.auto import tqdm

    total = int(response.headers.get("Content-Length") or 0) or None
    with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None, leave=False) as bar:
        for chunk in iter(lambda: response.read(1 << 20), b""):
            bar.update(len(chunk))
            yield chunk


def dataset_folder(key: str, needed: tuple[str, ...], data_dir: str | os.PathLike | None, download: bool,
                    prepare: Callable[[Path], None] | None = None, discard_downloads: bool = False) -> Path:
    """The first folder ``<root>/key`` that holds every file in ``needed``.

    Without one, a folder that holds the REMOTE_FILES is ``prepare``d (converted or extracted into the
    ``needed`` files); without that either, the REMOTE_FILES are downloaded and prepared.
    """
    roots = search_roots(data_dir)
    for root in roots:
        if has_all(root / key, needed):
            return root / key
    sources = tuple(r.name for r in REMOTE_FILES[key])
    for root in roots:
        if prepare is not None and has_all(root / key, sources):
            prepare(root / key)
            return root / key
    folder, fetched = _download(key, data_dir, download)
    if prepare is not None:
        prepare(folder)
        for path in fetched if discard_downloads else ():
            path.unlink()
    return folder
