"""Artifacts on shared storage: an fsspec URL (``s3://bucket/run``, ``gs://...``, ``file://...``) as
the ingest's ``--out`` and as what ``load`` and ``neo4j import`` read.

Artifacts are always computed and read as local folders. Each URL has a local *mirror* under the
cache (:func:`mirror`): an ingest into a URL writes each artifact into the mirror exactly as into a
local folder, then :func:`upload` copies its files to the URL with ``manifest.json`` last. Readers
find artifacts by their manifests, so an upload cut off before its end is invisible, and the next
upload of that artifact completes it. :func:`download` brings the artifacts of a URL into its mirror
(those already there with the same manifest are kept), where they are loaded and where the catalog's
``basis_uri`` then points. The object store's credentials are fsspec's (its environment variables
and configuration); the store's client library is the user's to install (``s3fs``, ``gcsfs``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from circuit_atlas.cache import cache_dir
from circuit_atlas.errors import UserError

from .artifact import MANIFEST


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a place by URL (``scheme://``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def local_artifacts(location: str | Path) -> Path:
    """A local folder of artifacts for ``location``: itself, or a URL's mirror once downloaded."""
    if is_url(location):
        return download(str(location))
    if not Path(location).exists():
        raise UserError(f"{location} does not exist: give an artifact folder, a folder of artifacts or a URL.")
    return Path(location)


def mirror(url: str) -> Path:
    """The local folder that mirrors ``url``: one per URL under the cache."""
    return cache_dir() / "mirrors" / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def _filesystem(url: str):
    import fsspec  # type: ignore[import-untyped]

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as error:
        raise UserError(
            f"Cannot open {url}: {str(error).splitlines()[0]} (an object store needs its fsspec client, "
            f"e.g. pip install s3fs or gcsfs)."
        ) from error


def upload(artifact: Path, url: str) -> str | None:
    """Copy the local ``artifact`` folder to ``url``/its name, ``manifest.json`` last; returns its URL,
    or None when the URL holds it already (the same manifest)."""
    fs, root = _filesystem(url)
    target = f"{root.rstrip('/')}/{artifact.name}"
    if fs.exists(f"{target}/{MANIFEST}") and fs.cat_file(f"{target}/{MANIFEST}") == (artifact / MANIFEST).read_bytes():
        return None
    fs.makedirs(target, exist_ok=True)
    names = sorted(p.name for p in artifact.iterdir() if p.is_file() and p.name != MANIFEST)
    for name in [*names, MANIFEST]:
        fs.put_file(str(artifact / name), f"{target}/{name}")
    return f"{url.rstrip('/')}/{artifact.name}"


def download(url: str) -> Path:
    """The mirror of ``url`` holding every artifact whose manifest is at the URL, one level below it
    (the artifact's own mirror when the URL is one artifact); :class:`UserError` when there is none.
    A mirrored artifact loses its manifest while it is refreshed, so one cut off is not read."""
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    single = fs.exists(f"{root}/{MANIFEST}")
    manifests = [f"{root}/{MANIFEST}"] if single else sorted(fs.glob(f"{root}/*/{MANIFEST}"))
    remotes = [m.rsplit("/", 1)[0] for m in manifests if not m.rsplit("/", 2)[-2].startswith(".")]
    if not remotes:
        raise UserError(f"No artifact under {url}: expected folders with a {MANIFEST}, as `ingest --out {url}` writes.")
    local = mirror(url)
    for remote in remotes:
        there = local / remote.rsplit("/", 1)[-1]
        manifest = fs.cat_file(f"{remote}/{MANIFEST}")
        if (there / MANIFEST).is_file() and (there / MANIFEST).read_bytes() == manifest:
            continue  # already mirrored
        there.mkdir(parents=True, exist_ok=True)
        (there / MANIFEST).unlink(missing_ok=True)
        for entry in fs.ls(remote, detail=False):
            if entry.rsplit("/", 1)[-1] != MANIFEST:
                fs.get_file(entry, str(there / entry.rsplit("/", 1)[-1]))
        (there / MANIFEST).write_bytes(manifest)
    return local / remotes[0].rsplit("/", 1)[-1] if single else local
