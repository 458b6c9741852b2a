"""Datasets from the Hugging Face Hub: ``--data hf://datasets/NAMESPACE/NAME[@REVISION]`` → a local folder.

``open_data(spec)`` is the one place a data spec becomes a folder of class folders. A local path comes back
as it is. A Hub dataset is fetched with ``snapshot_download(repo_type="dataset")`` into the normal Hub cache
(``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE`` with a cached copy, all read when called by
``pokedemo.hub.client``) and one of three layouts is recognised:

- an image folder: ``<class>/<image>`` at the root or under one folder, optionally under ``train/``,
  ``validation/`` and ``test/`` split folders;
- zip files of such folders (extracted with the same safe extraction as app uploads);
- Parquet files as the ``datasets`` library writes them for image classification: an image column of
  ``{"bytes": ...}`` structs, an integer label column, class names from the dataset card's ``class_label``.

When a dataset brings its own splits they are used instead of pokedemo's duplicate-aware split (a missing
validation or test part is carved out of ``train`` with that split); the duplicate report is still made.
Zips and Parquet rows are unpacked once per commit into ``<hub cache>/pokedemo-prepared/`` (built in a
temporary folder and renamed into place, so concurrent processes — torchrun ranks — never see half of it). A
caller may name another cache folder (a public-mode visitor's own); download and unpacked form then go there.
``is_hub_download`` tells a downloaded folder from one of the user's: nothing edits a download in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

from pokedemo.data import (
    IMAGE_EXTENSIONS,
    Dataset,
    DatasetError,
    Split,
    check_ratios,
    scan_dataset,
    split_dataset,
)
from pokedemo.doctor import diagnose, format_doctor
from pokedemo.hub.card import CARD_FILE
from pokedemo.hub.client import (
    HubContext,
    HubError,
    RepoRef,
    check_can_write,
    describe_error,
    hub_api,
    hub_cache_dir,
    hub_errors,
    offline_mode,
    parse_repo_ref,
    read_context,
    scrub,
    write_context,
)
from pokedemo.hub.limits import bounded_snapshot_download
from pokedemo.uploads import UploadError, extract_dataset_zip

PREFIX = "hf://datasets/"
# Split folder / Parquet split names → pokedemo's parts.
SPLIT_NAMES = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val",
               "dev": "val", "test": "test", "testing": "test"}
EXPECTED = ("expected class folders of images (<class>/<image>, at the root or under one folder, optionally "
            "under train/ validation/ test/), zip files of such folders, or Parquet files with an image column "
            "and an integer label column")
PREPARED = "pokedemo-prepared"  # where zips and Parquet rows of a download are unpacked, beside the download
_REPO_FOLDER = re.compile(r"^(models|datasets|spaces)--.+")  # huggingface_hub's cache folder of one repo
_PARQUET_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)(-\d{5}-of-\d{5})?(-[0-9a-f]+)?\.parquet$")


@dataclass
class DataSource:
    """Where a run's images are: ``root`` is a folder of class folders that ``scan_dataset`` reads.

    For a Hub dataset, ``spec`` is its ``hf://`` address at the resolved ``revision`` (a commit sha) and
    ``own_splits`` says the dataset brought its own split: then each image's part is the second component of
    its relative path (``<class>/<train|val|test>/...``).
    """

    root: Path
    spec: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    layout: str = "folder"
    own_splits: bool = False
    note: str = ""

    @property
    def is_hub(self) -> bool:
        return self.repo_id is not None

    def record(self) -> dict[str, Any] | None:
        """What a checkpoint stores about the source (None for a local folder: its path is recorded anyway)."""
        if not self.is_hub:
            return None
        return {"hub_dataset": self.repo_id, "revision": self.revision, "layout": self.layout,
                "own_splits": self.own_splits, "spec": f"{PREFIX}{self.repo_id}@{self.revision}"}

    def split(self, dataset, ratios, seed: int, trained: Collection[str] = ()):
        """The dataset's own split when it has one, else pokedemo's duplicate-aware split (``trained``: as
        ``split_dataset``'s)."""
        if not self.own_splits:
            return split_dataset(dataset, ratios, seed, trained)
        return split_from_parts(dataset, ratios, seed)


def is_hub_dataset(spec: Any) -> bool:
    return isinstance(spec, str) and spec.strip().startswith("hf://")


def parse_dataset_spec(spec: str) -> RepoRef:
    text = spec.strip()
    if not text.startswith(PREFIX):
        raise HubError(f"unsupported Hub address {text!r}: expected {PREFIX}NAMESPACE/NAME[@REVISION]")
    return parse_repo_ref(text[len(PREFIX):])


def open_data(spec: str | os.PathLike | DataSource, *, token: str | bool | None = None,
              cache_dir: str | os.PathLike | None = None, budget: int | None = None) -> DataSource:
    """A data spec (local folder, ``hf://datasets/...`` address or an already opened source) → DataSource.

    For a Hub dataset: ``token``, ``cache_dir`` and ``budget`` are ``download_dataset``'s; its unpacked form
    (zips, Parquet) goes beside the download, under ``cache_dir``."""
    if isinstance(spec, DataSource):
        return spec
    if not is_hub_dataset(spec):
        return DataSource(root=Path(spec))
    ref = parse_dataset_spec(str(spec))
    snapshot = download_dataset(ref, token=token, cache_dir=cache_dir, budget=budget)
    source = prepare_snapshot(snapshot, ref.repo_id, snapshot.name, cache_dir)
    source.spec = str(spec).strip()
    return source


# ----------------------------------------------------------------------------------------------- download


def download_dataset(ref: RepoRef, *, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                     budget: int | None = None) -> Path:
    """The snapshot folder (``.../snapshots/<commit sha>``) of a dataset repo in ``cache_dir`` (None: the
    normal Hub cache), within the dataset download limits and ``budget``, the bytes it may add there
    (``pokedemo.hub.limits``). ``token`` False: none at all, not HF_TOKEN."""
    ctx = read_context("download", ref, token, cache_dir)
    with _dataset_errors(ctx):
        return bounded_snapshot_download(ctx, repo_type="dataset", label=f"{PREFIX}{ref.label}",
                                         local_files_only=offline_mode(), budget=budget)


@contextmanager
def _dataset_errors(ctx: HubContext) -> Iterator[None]:
    """The client's one-line errors, worded for a dataset repo where they differ from a model repo's."""
    from huggingface_hub import errors as hf

    try:
        yield
    except HubError:
        raise
    except hf.RepositoryNotFoundError:
        raise HubError(
            f"dataset repo {ctx.ref.repo_id} not found on {ctx.host}: check the name; if it is "
            "private, give a token that can read it (HF_TOKEN or `hf auth login`)") from None
    except Exception as err:  # noqa: BLE001 - every failure becomes one classified, token-free line
        raise HubError(scrub(describe_error(err, ctx), ctx.token)) from None


# ----------------------------------------------------------------------------------------------- layouts


def prepare_snapshot(snapshot: Path, repo_id: str, revision: str,
                     cache_dir: str | os.PathLike | None = None) -> DataSource:
    """Recognise the layout of a downloaded dataset and return the folder to scan (DatasetError if none fits);
    what has to be unpacked goes under ``cache_dir`` (None: the normal Hub cache)."""
    label = f"{PREFIX}{repo_id}"
    files = [p for p in snapshot.rglob("*") if p.is_file() and not _hidden(p.relative_to(snapshot))]
    parquet = [p for p in files if p.suffix.lower() == ".parquet"]
    zips = [p for p in files if p.suffix.lower() == ".zip"]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    prepared = _prepared_dir(repo_id, revision, cache_dir)
    if images:
        found = find_image_layout(snapshot)
        if found is None:
            raise DatasetError(f"{label} holds {len(images)} images but not as class folders; {EXPECTED}")
        layout, where = found
        return _source_for(where, layout, prepared, repo_id, revision, "image folder")
    if zips:
        return _build_once(prepared, lambda tmp: _extract_zips(zips, tmp, label), repo_id, revision, "zip")
    if parquet:
        return _build_once(prepared, lambda tmp: write_parquet_images(parquet, snapshot, tmp, label), repo_id,
                           revision, "parquet")
    shown = ", ".join(sorted(p.relative_to(snapshot).as_posix() for p in files)[:6]) or "no files"
    raise DatasetError(f"{label} has no images, zip or Parquet files (found: {shown}); {EXPECTED}")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX")


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())


def find_image_layout(folder: Path, depth: int = 0) -> tuple[str, Any] | None:
    """("folder", root) or ("splits", {part: root}) for class folders at ``folder`` or one folder below."""
    dirs = [d for d in _visible_dirs(folder) if _has_images(d)]
    splits = {SPLIT_NAMES[d.name.lower()]: d for d in dirs if d.name.lower() in SPLIT_NAMES}
    if splits and len(splits) == len(dirs) and all(_visible_dirs(d) for d in splits.values()):
        if set(splits) == {"train"}:
            return "folder", splits["train"]  # one split only: pokedemo makes its own
        return "splits", splits
    if len(dirs) == 1 and depth == 0 and _visible_dirs(dirs[0]):
        inner = find_image_layout(dirs[0], depth + 1)
        if inner is not None:
            return inner
    return ("folder", folder) if dirs else None


def _source_for(where: Any, layout: str, prepared: Path, repo_id: str, revision: str, kind: str) -> DataSource:
    if layout == "folder":
        return DataSource(root=Path(where), repo_id=repo_id, revision=revision, layout=kind)
    source = _build_once(prepared, lambda tmp: link_split_view(where, tmp), repo_id, revision, kind)
    return source


def _build_once(prepared: Path, build, repo_id: str, revision: str, kind: str) -> DataSource:
    """Build the prepared folder of a commit once (temporary folder, then rename); reuse it afterwards."""
    if not (prepared / "READY").is_file():
        prepared.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=prepared.parent))
        try:
            build(tmp / "data")
            (tmp / "READY").write_text(kind + "\n", encoding="utf-8")
            try:
                os.replace(tmp, prepared)
            except OSError:
                if not (prepared / "READY").is_file():  # not another process winning the race: a real failure
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    root = prepared / "data"
    found = find_image_layout(root)
    if found is None:
        raise DatasetError(f"{PREFIX}{repo_id}: the unpacked files hold no class folders of images; {EXPECTED}")
    layout, where = found
    if layout == "splits":  # a zip of split folders: link its split view next to the extracted files
        return _source_for(where, layout, prepared.with_name(prepared.name + "-splits"), repo_id, revision, kind)
    own = (Path(where) / ".pokedemo-own-splits").is_file()
    return DataSource(root=Path(where), repo_id=repo_id, revision=revision, layout=kind, own_splits=own,
                      note=_splits_note(Path(where)) if own else "")


def _splits_note(root: Path) -> str:
    parts = sorted({d.name for c in _visible_dirs(root) for d in _visible_dirs(c)})
    return f"the dataset brings its own split ({', '.join(parts)}); using it instead of the duplicate-aware split"


def link_split_view(splits: dict[str, Path], target: Path, *, move: bool = False) -> None:
    """``<split>/<class>/<file>`` → ``target/<class>/<part>/<file>`` (symlinks, copies where links fail; moved
    when ``move``), so one scan sees every class once and the part is the second component of each path."""
    for part, split_root in splits.items():
        for class_dir in _visible_dirs(split_root):
            for path in class_dir.rglob("*"):
                if not path.is_file() or _hidden(path.relative_to(class_dir)):
                    continue
                dest = target / class_dir.name / part / path.relative_to(class_dir)
                dest.parent.mkdir(parents=True, exist_ok=True)
                if move:
                    path.rename(dest)
                    continue
                try:
                    dest.symlink_to(path.resolve())
                except OSError:
                    shutil.copyfile(path, dest)
    (target / ".pokedemo-own-splits").write_text("", encoding="utf-8")


def _extract_zips(zips: list[Path], target: Path, label: str) -> None:
    """One zip: its folders as they are. Several: each must be named after a split (train.zip, test.zip...)."""
    try:
        if len(zips) == 1:
            root = extract_dataset_zip(zips[0], target.parent / "unzipped")
            shutil.move(str(root), str(target))
            return
        stems = {z: z.stem.split("-")[0].lower() for z in zips}
        unknown = [z.name for z, s in stems.items() if s not in SPLIT_NAMES]
        if unknown:
            raise DatasetError(f"{label} has several zip files and {', '.join(unknown)} is not named after a split "
                               "(train, validation, test); put one zip per split or one zip in all")
        splits = {}
        for z, stem in stems.items():
            splits[SPLIT_NAMES[stem]] = extract_dataset_zip(z, target.parent / "unzipped" / stem)
        link_split_view(splits, target, move=True)  # the extracted copies live in the prepared folder itself
    except UploadError as err:
        raise DatasetError(f"{label}: {err}") from None


# ----------------------------------------------------------------------------------------------- Parquet


def write_parquet_images(files: list[Path], snapshot: Path, target: Path, label: str) -> None:
    """Write the rows of ``datasets``-style image-classification Parquet files as ``<class>/<part>/<n>.<ext>``."""
    import pyarrow.parquet as pq

    names = class_names_from_card(snapshot / "README.md")
    by_part: dict[str, list[Path]] = {}
    for path in sorted(files):
        by_part.setdefault(_parquet_part(path, snapshot), []).append(path)
    for part, paths in by_part.items():
        for file_no, path in enumerate(paths):
            parquet = pq.ParquetFile(path)
            schema = parquet.schema_arrow
            image_col, label_col = _parquet_columns(schema, label)
            names = names or _names_from_schema(schema, label_col)
            row_no = 0
            for batch in parquet.iter_batches(batch_size=256, columns=[image_col, label_col]):  # bounded memory
                for image, value in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                    _write_row(image, value, names, target, part, f"{file_no:03d}-{row_no:06d}", label)
                    row_no += 1
    if len(by_part) > 1:
        (target / ".pokedemo-own-splits").write_text("", encoding="utf-8")
    else:  # one split only: an image folder pokedemo splits itself
        _flatten_single_part(target)


def _parquet_part(path: Path, snapshot: Path) -> str:
    """The part of a shard: its file name (``train-00000-of-00001.parquet``) or its folder (``train/x.parquet``)."""
    match = _PARQUET_SHARD.match(path.name)
    for name in ([match.group("split")] if match else []) + [p for p in reversed(path.relative_to(snapshot).parts)]:
        if name.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[name.lower()]
    return "train"


def class_names_from_card(card: Path) -> dict[int, str] | None:
    """Label id → name from the dataset card's ``dataset_info.features[].dtype.class_label.names``."""
    if not card.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(card) or {}
    except Exception:  # noqa: BLE001 - a broken card only loses the names
        return None
    infos = meta.get("dataset_info") or []
    for info in infos if isinstance(infos, list) else [infos]:
        for feature in (info or {}).get("features") or []:
            dtype = feature.get("dtype") if isinstance(feature, dict) else None
            class_label = dtype.get("class_label") if isinstance(dtype, dict) else None  # dtype may be "image"
            if isinstance(class_label, dict) and isinstance(class_label.get("names"), dict):
                return {int(k): str(v) for k, v in class_label["names"].items()}
    return None


def _names_from_schema(schema, label_col: str) -> dict[int, str] | None:
    """Fallback: the ClassLabel names ``datasets`` also stores in the Parquet schema metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        feature = json.loads(raw)["info"]["features"][label_col]
        return {i: str(n) for i, n in enumerate(feature["names"])}
    except (TypeError, KeyError, ValueError):
        return None


def _parquet_columns(schema, label: str) -> tuple[str, str]:
    import pyarrow as pa

    images = [f.name for f in schema if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0]
    labels = [f.name for f in schema if pa.types.is_integer(f.type)]
    preferred = [n for n in labels if n.lower() in ("label", "labels")]
    if not images or not labels:
        found = ", ".join(f"{f.name} ({f.type})" for f in schema)
        raise DatasetError(f"{label} has Parquet files without an image column of {{bytes}} and an integer label "
                           f"column (columns: {found}); {EXPECTED}")
    return images[0], (preferred or labels)[0]


def _safe_class_name(name: str, value: int) -> str:
    cleaned = re.sub(r"[\\/\x00]", "_", name).strip()
    return cleaned if cleaned and not cleaned.startswith(".") else f"class_{value}"


def _write_row(image: Any, value: Any, names, target: Path, part: str, stem: str, label: str) -> None:
    data = (image or {}).get("bytes") if isinstance(image, dict) else None
    if value is None or value < 0:
        return  # unlabelled rows (label -1, as `datasets` writes for a test set without labels)
    if not data:
        raise DatasetError(f"{label}: a Parquet row holds no image bytes (only a path?); {EXPECTED}")
    name = _safe_class_name(names.get(int(value), str(value)) if names else str(value), int(value))
    ext = _image_extension(data, (image or {}).get("path"))
    dest = target / name / part / f"{stem}{ext}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _image_extension(data: bytes, path: str | None) -> str:
    suffix = Path(path).suffix.lower() if path else ""
    if suffix in IMAGE_EXTENSIONS:
        return suffix
    signatures = {b"\x89PNG": ".png", b"\xff\xd8": ".jpg", b"GIF8": ".gif", b"BM": ".bmp"}
    for magic, ext in signatures.items():
        if data.startswith(magic):
            return ext
    return ".webp" if data[8:12] == b"WEBP" else ".png"  # the loader trusts content, not the extension


def _flatten_single_part(target: Path) -> None:
    for class_dir in _visible_dirs(target):
        for part_dir in _visible_dirs(class_dir):
            for item in part_dir.iterdir():
                item.rename(class_dir / item.name)
            part_dir.rmdir()


def _prepared_dir(repo_id: str, revision: str, cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir or hub_cache_dir()) / PREPARED / f"datasets--{repo_id.replace('/', '--')}" / revision


def is_hub_download(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in files downloaded from the Hub, wherever their cache folder is: a repo folder in
    huggingface_hub's cache layout (``datasets--NS--NAME/snapshots/...``, ``models--...``) or a dataset
    unpacked from one (``pokedemo-prepared/...``). The path's text is read, links resolved; no file is opened."""
    parts = Path(path).resolve().parts
    in_repo_folder = any(_REPO_FOLDER.match(part) and following in ("snapshots", "blobs")
                         for part, following in zip(parts, parts[1:]))
    return in_repo_folder or PREPARED in parts


# ----------------------------------------------------------------------------------------------- own splits


def part_of(rel_path: str) -> str | None:
    """``<class>/<part>/...`` → part, for a DataSource with ``own_splits``."""
    pieces = rel_path.split("/")
    return pieces[1] if len(pieces) > 2 and pieces[1] in ("train", "val", "test") else None


def split_from_parts(dataset, ratios, seed: int):
    """The dataset's own parts; a missing validation or test part is carved out of train, duplicate-aware."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, rec in enumerate(dataset.records):
        parts[part_of(rec.rel_path) or "train"].append(i)
    r = check_ratios(ratios)
    for missing in ("val", "test"):
        if not parts[missing] and parts["train"]:
            parts["train"], parts[missing] = _carve(dataset, parts["train"], r[1 if missing == "val" else 2], seed)
    total = max(1, len(dataset.records))
    realised = tuple(len(parts[p]) / total for p in ("train", "val", "test"))
    return Split(sorted(parts["train"]), sorted(parts["val"]), sorted(parts["test"]), seed, realised)


def _carve(dataset, indices: list[int], share: float, seed: int) -> tuple[list[int], list[int]]:
    """Split ``indices`` into (kept, held out ~share) with the duplicate-aware split on that subset."""
    local = {g: k for k, g in enumerate(indices)}
    groups = [[local[i] for i in g if i in local] for g in dataset.near_groups]
    sub = Dataset(dataset.root, dataset.classes, [dataset.records[i] for i in indices], [], [],
                  [g for g in groups if len(g) > 1], [])
    split = split_dataset(sub, (1 - share, share, 0.0), seed)
    return [indices[k] for k in split.train], [indices[k] for k in split.val]


# ----------------------------------------------------------------------------------------------- publish


def push_dataset(data_dir: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
                 commit_message: str | None = None) -> str:
    """Upload a folder of class folders as an image-folder dataset repo with a generated dataset card.

    The repo holds exactly the readable images training would use, under the same relative paths, so
    training from ``hf://datasets/REPO`` sees the same classes, counts and duplicate-aware split as the folder.
    Returns the repo URL; raises HubError / DatasetError (one line each).
    """
    from huggingface_hub import CommitOperationAdd

    ref = parse_repo_ref(repo_id, allow_revision=False)
    dataset = scan_dataset(data_dir, require_splittable=False)
    report = diagnose(dataset.root)
    ctx = write_context("push", ref, token)
    operations = [CommitOperationAdd(path_in_repo=r.rel_path, path_or_fileobj=str(r.path)) for r in dataset.records]
    card = dataset_card(report, ref.repo_id)
    operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=card.encode("utf-8")))
    with hub_errors(ctx):
        api = hub_api(ctx)
        check_can_write(api, ctx)
        url = _ensure_dataset_repo(api, ctx, private)
        message = commit_message or f"Upload {len(dataset.records)} images in {len(dataset.classes)} classes"
        api.create_commit(repo_id=ref.repo_id, repo_type="dataset", operations=operations, commit_message=message)
    return url


def _ensure_dataset_repo(api: Any, ctx: HubContext, private: bool) -> str:
    """The repo URL, creating the repo when missing; an existing public repo is not pushed to with --private."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.repo_info(ctx.ref.repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        return str(api.create_repo(ctx.ref.repo_id, repo_type="dataset", private=private, exist_ok=True))
    if private and not info.private:
        raise HubError(f"dataset {ctx.ref.repo_id} already exists and is public; nothing was uploaded because "
                       "--private was asked")
    return f"{ctx.endpoint}/datasets/{ctx.ref.repo_id}"


def dataset_card(report: dict[str, Any], repo_id: str) -> str:
    """README.md of a pushed dataset: YAML metadata, classes and counts, the doctor's duplicate report."""
    n = report["n_images"]
    size = "n<1K" if n < 1000 else "1K<n<10K" if n < 10_000 else "10K<n<100K" if n < 100_000 else "100K<n<1M"
    front = "\n".join([
        "---", "task_categories:", "- image-classification", "tags:", "- pokedemo", "- imagefolder",
        "size_categories:", f"- {size}", "---", "",
    ])
    rows = "\n".join(f"| {name} | {count} |" for name, count in report["classes"].items())
    doctor = "\n".join(format_doctor(report).splitlines()[1:])  # line 1 names the uploader's local folder
    usage = (f"Train on it with pokedemo (same classes, counts and split as the local folder):\n\n"
             f"```bash\npython -m pokedemo train --data {PREFIX}{repo_id}\n```\n\n"
             f"With the `datasets` library it loads as an image folder: `load_dataset(\"{repo_id}\")`.\n")
    return (f"{front}# {repo_id.split('/')[-1]}\n\nAn image-classification dataset of {n} images in "
            f"{len(report['classes'])} classes, one folder per class (`<class>/<image>`).\n\n"
            f"| class | images |\n|---|---:|\n{rows}\n\n"
            f"## Duplicates and label conflicts (pokedemo doctor)\n\n```text\n{doctor}\n```\n\n"
            f"## Usage\n\n{usage}")
