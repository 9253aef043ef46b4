"""Minari storage: atomic dataset writes, checksums, and reading ids or paths with clear errors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import minari
from minari.data_collector import EpisodeBuffer
from minari.dataset.minari_dataset import parse_dataset_id
from minari.storage.datasets_root_dir import get_dataset_path

from saferl.errors import SaferlError

CHECKSUM_KEY = "saferl"  # our block inside Minari's metadata.json


class DatasetError(SaferlError):
    """A dataset that cannot be used: missing, corrupt, or not matching the env."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    pass


class DatasetCorruptError(DatasetError):
    pass


def datasets_root() -> Path:
    return Path(get_dataset_path(""))


def dataset_dir(dataset_id: str) -> Path:
    return Path(get_dataset_path(dataset_id))


def _data_files(data_path: Path) -> list[Path]:
    return sorted(p for p in data_path.iterdir() if p.is_file() and p.name != "metadata.json")


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _minari_root(root: Path) -> Iterator[None]:
    """Point Minari at another datasets root for the duration (Minari reads the env var on each call)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def require_absent(dataset_id: str, overwrite: bool) -> None:
    """Refuse to replace an existing dataset unless ``overwrite`` (builders call it before any work too)."""
    final = dataset_dir(dataset_id)
    if final.exists() and not overwrite:
        raise DatasetError(f"dataset {dataset_id} already exists at {final}; pass overwrite=true to replace it")


def write_dataset(
    dataset_id: str,
    episodes: Sequence[EpisodeBuffer],
    env_id: str,
    saferl_metadata: dict[str, Any],
    description: str,
    overwrite: bool = False,
    **minari_kwargs: Any,
) -> Path:
    """Write a Minari dataset atomically and record a SHA-256 of its data file(s) in its metadata.

    The dataset is created under a staging root next to the real one and moved into place with one
    rename, so a killed build never leaves a half-written dataset under the real id.
    """
    root = datasets_root()
    final = dataset_dir(dataset_id)
    require_absent(dataset_id, overwrite)
    staging_root = root / ".staging" / uuid.uuid4().hex
    staging_root.mkdir(parents=True)
    try:
        with _minari_root(staging_root):
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=list(episodes),
                env=env_id,
                eval_env=env_id,
                algorithm_name=saferl_metadata.get("recipe", "saferl"),
                author="saferl",
                author_email="saferl@users.noreply.github.com",
                code_permalink="https://github.com/saferl/saferl",
                description=description,
                **minari_kwargs,  # e.g. ref_min_score / ref_max_score of D4RL-style datasets
            )
        staged = staging_root / dataset_id
        data_path = staged / "data"
        checksums = {p.name: file_sha256(p) for p in _data_files(data_path)}
        meta = dict(saferl_metadata, checksums=checksums)
        _update_metadata(data_path, {CHECKSUM_KEY: meta})
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            trash = staging_root / "replaced"
            final.rename(trash)
        staged.rename(final)
        _ensure_namespace(dataset_id)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            (root / ".staging").rmdir()
    return final


def _update_metadata(data_path: Path, extra: dict[str, Any]) -> None:
    meta_file = data_path / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta.update(extra)
    tmp = meta_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta))
    tmp.replace(meta_file)


def _ensure_namespace(dataset_id: str) -> None:
    namespace = parse_dataset_id(dataset_id)[0]
    if namespace and namespace not in minari.namespace.list_local_namespaces():
        minari.namespace.create_namespace(namespace)


def read_metadata(path: Path) -> dict[str, Any]:
    meta_file = path / "data" / "metadata.json"
    try:
        return json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise DatasetNotFoundError(f"{path} is not a Minari dataset directory (no data/metadata.json)") from None
    except json.JSONDecodeError as err:
        raise DatasetCorruptError(f"corrupt dataset metadata {meta_file}: {err}") from None


def verify_checksums(path: Path, metadata: dict[str, Any]) -> bool:
    """Check the data files against the checksums saferl recorded; False when none were recorded."""
    checksums = metadata.get(CHECKSUM_KEY, {}).get("checksums")
    if not checksums:
        return False
    for name, expected in checksums.items():
        file = path / "data" / name
        if not file.is_file():
            raise DatasetCorruptError(f"dataset file {file} is missing; rebuild the dataset")
        actual = file_sha256(file)
        if actual != expected:
            raise DatasetCorruptError(
                f"checksum mismatch for {file}: expected sha256 {expected[:16]}…, found {actual[:16]}…; "
                "the file is corrupt or truncated. Rebuild it (python -m saferl.collect env=<task> "
                "overwrite=true) or delete the dataset directory"
            )
    return True


def resolve(id_or_path: str | os.PathLike, download: bool = False) -> Path:
    """The local directory of a dataset given as a Minari id or a path; downloads only when asked."""
    candidate = Path(id_or_path).expanduser()
    if (candidate / "data" / "metadata.json").is_file():
        return candidate
    if candidate.name == "data" and (candidate / "metadata.json").is_file():
        return candidate.parent
    dataset_id = str(id_or_path)
    local = dataset_dir(dataset_id)
    if (local / "data" / "metadata.json").is_file():
        return local
    if download:
        try:
            minari.download_dataset(dataset_id)
        except Exception as err:  # network, unknown remote id, …: say which and why
            raise DatasetNotFoundError(f"could not download Minari dataset {dataset_id!r}: {err}") from err
        return dataset_dir(dataset_id)
    local_ids = sorted(minari.list_local_datasets()) if datasets_root().exists() else []
    listing = ", ".join(local_ids) if local_ids else "none"
    raise DatasetNotFoundError(
        f"dataset {dataset_id!r} is neither a Minari dataset directory nor a local Minari id "
        f"(MINARI_DATASETS_PATH={datasets_root()}). Local datasets: {listing}. Build a saferl dataset with "
        "`python -m saferl.collect env=<task>`, or pass download=true to fetch a remote Minari id."
    )
