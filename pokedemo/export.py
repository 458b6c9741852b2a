"""ONNX export of a checkpoint that predicts exactly what pokedemo predicts, checked by the export itself.

The graph takes uint8 RGB pictures ``[N, 3, S, S]`` (N dynamic) and returns calibrated probabilities
``[N, C]``: scaling to [0, 1], the backbone's normalisation, the network with BatchNorm folded into its
convolutions (``pokedemo.inference.folded_for_inference``, what the ``Predictor`` runs) and the softmax are all
inside, and the temperature is already in the head (``pokedemo.calibration``). What a program needs besides the
pixels (class names, S, the resize rule, mean/std) is in the model's metadata (``metadata_props``).

Beside ``model.onnx`` the export writes ``predict_onnx.py`` (PIL + numpy + onnxruntime only; it reproduces
``pokedemo.images.load_image`` and ``image_to_tensor``), a ``README.md`` and ``export.json`` (the parity check,
size and latency). Before anything is moved into place, onnxruntime classifies the run's recorded test
pictures (or a folder given) and its probabilities are compared with ``Predictor.probabilities`` on the CPU;
a difference over ``MAX_PROBABILITY_DIFF`` or any other top-1 class stops the export with one line and leaves
nothing behind. Without onnxruntime the file is still written and the record says the check was skipped.

torch's ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``) writes the graph; onnx,
onnxscript and onnxruntime are imported only here, when an export runs.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pokedemo.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_checkpoint
from pokedemo.config import default_checkpoint_root
from pokedemo.data import cached_tensors
from pokedemo.openset import OpenSet, compute_scores
from pokedemo.images import IMAGE_EXTENSIONS, ImageLoadError
from pokedemo.model_ref import resolve_model
from pokedemo.predict import MAX_SIDE_FACTOR, Predictor, recorded_split

ONNX_FILE = "model.onnx"
SCRIPT_FILE = "predict_onnx.py"
README_FILE = "README.md"
RECORD_FILE = "export.json"
RECORD_FORMAT = "pokedemo-onnx-export"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
SCORE_NAME = "open_set_score"
KNOWN_NAME = "known"
FORMATS = ("onnx",)
MAX_PROBABILITY_DIFF = 1e-4
LATENCY_PICTURES = 200  # pictures timed one by one (the first ones of the parity set)
PARITY_BATCH = 16
SCRIPT_SOURCE = Path(__file__).with_name("export_bundle") / SCRIPT_FILE
RESIZE_RULE = (
    "PIL: EXIF orientation applied, transparency composited onto white, first frame of animations, longer "
    "side reduced to at most max_side px (JPEG draft, then Image.thumbnail(BICUBIC, reducing_gap=2.0)); then "
    "PIL.ImageOps.fit((S, S), BILINEAR): the centre square of the picture resized to S x S; RGB uint8, "
    "channels first"
)


class ExportError(ValueError):
    """An export that cannot be done or did not pass its check; str(e) is one line."""


class ProbabilityGraph(nn.Module):
    """uint8 pictures [N, 3, S, S] → (probabilities [N, C], open-set score [N], known [N]) around the Predictor's
    (folded) model and its open-set rule (``pokedemo.openset``): known = score >= the closest class's threshold."""

    def __init__(self, folded: nn.Module, open_set: OpenSet):
        super().__init__()
        self.model = folded
        self.score_name = open_set.score
        self.register_buffer("thresholds", open_set.thresholds.float().clone())
        self.statistic_names = sorted(open_set.stats)
        for name in self.statistic_names:
            self.register_buffer(f"stat_{name}", open_set.stats[name].float().clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The Classifier scales uint8 to [0, 1] and normalises inside, exactly as for the Predictor's input.
        features = self.model.forward_features(images)
        logits = self.model.head(features).float()
        stats = {name: getattr(self, f"stat_{name}") for name in self.statistic_names}
        score = compute_scores(self.score_name, logits, features.float(), stats)
        probabilities = torch.softmax(logits, dim=1)
        known = score >= self.thresholds[probabilities.argmax(dim=1)]
        return probabilities, score, known


@dataclass(frozen=True)
class Parity:
    pictures: int
    source: str                       # "recorded test split" or the folder given
    max_abs_diff: float | None = None
    top1_agree: int | None = None     # pictures whose top-1 class is the same
    max_score_diff: float | None = None  # open-set score, onnxruntime vs Predictor
    known_differ: int = 0             # pictures whose known/unknown answer differs away from the threshold
    unreadable: int = 0               # files of a given folder that could not be read (left out)
    skipped: str | None = None        # why no check ran

    @property
    def passed(self) -> bool:
        return self.skipped is None and self.max_abs_diff is not None and \
            self.max_abs_diff <= MAX_PROBABILITY_DIFF and self.top1_agree == self.pictures and \
            (self.max_score_diff or 0.0) <= MAX_PROBABILITY_DIFF and self.known_differ == 0


@dataclass(frozen=True)
class Latency:
    pictures: int
    threads: int
    onnxruntime_p50_ms: float
    torch_p50_ms: float
    machine: str


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    onnx_path: Path
    size_bytes: int
    parity: Parity
    latency: Latency | None
    metadata: dict[str, str]
    record: dict[str, Any] = field(default_factory=dict)  # what export.json holds

    @property
    def runtime_files(self) -> list[Path]:
        """The files a program needs (model.onnx, predict_onnx.py), in their final place."""
        return [self.out_dir / name for name in self.record.get("runtime_files", [])]

    def summary_lines(self) -> list[str]:
        """What the CLI prints: where, how big, the parity check and the latency."""
        lines = [f"{self.onnx_path} ({self.size_bytes / 1e6:.1f} MB)"]
        p = self.parity
        if p.skipped:
            lines.append(f"parity check skipped: {p.skipped}")
        else:
            lines.append(f"parity on {p.pictures} pictures ({p.source}): max |Δp| {p.max_abs_diff:.1e}, "
                         f"top-1 agreement {p.top1_agree}/{p.pictures}, open-set score max |Δ| "
                         f"{p.max_score_diff:.1e}, none-of-these answers differing {p.known_differ}")
        if self.latency:
            t = self.latency
            threads = f"{t.threads} thread{'s' if t.threads != 1 else ''}"
            lines.append(f"CPU latency per picture (p50 of {t.pictures}, {threads}): onnxruntime "
                         f"{t.onnxruntime_p50_ms:.1f} ms, torch Predictor {t.torch_p50_ms:.1f} ms")
        return lines


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None, *,
                      data: str | os.PathLike | None = None, fmt: str = "onnx") -> ExportResult:
    """Export ``checkpoint`` (a run folder, a run name or a Hub id: ``resolve_model``) into the folder ``out``
    (default ``./<name>-onnx``).

    Raises ExportError (and CheckpointError / DatasetError from loading the model or its pictures), all one
    line; ``out`` is then untouched."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    run_dir = resolve_model(checkpoint, root=default_checkpoint_root())
    predictor = Predictor(load_checkpoint(run_dir), device=torch.device("cpu"))
    out = Path(out) if out is not None else Path.cwd() / f"{_model_name(checkpoint)}-onnx"
    _check_target(out)
    staging = _staging_dir(out)
    try:
        pictures, parity_source, unreadable = _parity_pictures(predictor, data)
        onnx_path = staging / ONNX_FILE
        metadata = model_metadata(predictor)
        opset = _write_onnx(predictor, onnx_path, metadata)
        parity, latency = _check(predictor, onnx_path, pictures, parity_source, unreadable)
        if parity.skipped is None and not parity.passed:
            raise ExportError(
                f"ONNX parity check failed on {parity.pictures} pictures ({parity.source}): max |Δp| "
                f"{parity.max_abs_diff:.1e} (limit {MAX_PROBABILITY_DIFF:.0e}), top-1 differs on "
                f"{parity.pictures - parity.top1_agree}, open-set score max |Δ| {parity.max_score_diff:.1e}, "
                f"none-of-these answers differing on {parity.known_differ}; nothing was written")
        result = ExportResult(out, out / ONNX_FILE, onnx_path.stat().st_size, parity, latency, metadata)
        record = _record(result, run_dir, predictor, opset)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (staging / README_FILE).write_text(export_readme(record), encoding="utf-8")
        shutil.copyfile(SCRIPT_SOURCE, staging / SCRIPT_FILE)
        _move_into_place(staging, out)
        return replace(result, record=record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful move


def model_metadata(predictor: Predictor) -> dict[str, str]:
    """The ONNX metadata_props (all strings): what a program needs to feed the graph and read its output."""
    config = predictor.checkpoint.config
    calibration = (config.get("metrics") or {}).get("calibration") or {}
    size = predictor.image_size
    return {
        "format": RECORD_FORMAT,
        "class_names": json.dumps(predictor.classes),
        "image_size": str(size),
        "max_side": str(MAX_SIDE_FACTOR * size),
        "resize": RESIZE_RULE,
        "input": f"{INPUT_NAME}: uint8 RGB [N, 3, {size}, {size}], values 0-255 (no scaling or normalisation)",
        "output": f"{OUTPUT_NAME}: float32 [N, {len(predictor.classes)}], calibrated softmax probabilities in "
                  "class_names order",
        "open_set": json.dumps({**predictor.open_set.record(), "rule": f"{KNOWN_NAME} = {SCORE_NAME} >= "
                                "thresholds[index of the highest probability]; otherwise none of the classes"}),
        "outputs": f"{OUTPUT_NAME} [N, C]; {SCORE_NAME} float32 [N] (higher: more like the known classes); "
                   f"{KNOWN_NAME} bool [N]: false = the picture is none of class_names",
        "mean": json.dumps(config["mean"]),
        "std": json.dumps(config["std"]),
        "normalisation": "inside the graph: x / 255, then (x - mean) / std per channel",
        "temperature": str(calibration.get("temperature", 1.0)),
        "backbone": config["backbone"],
        "weights_sha256": config["weights_sha256"],
    }


def read_metadata(onnx_path: str | os.PathLike) -> dict[str, str]:
    """metadata_props of an ONNX file (the graph is not loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


# ----------------------------------------------------------------------------------------------- the graph


def _write_onnx(predictor: Predictor, path: Path, metadata: dict[str, str]) -> int:
    """Export the Predictor's folded model with softmax as one self-contained ONNX file; returns its opset."""
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:  # torch's exporter needs both; saying so beats its ImportError deep inside
        raise ExportError(f"ONNX export needs the onnx and onnxscript packages ({', '.join(missing)} missing): "
                          "pip install onnx onnxscript")
    folded = copy.deepcopy(predictor.inference_model).to(memory_format=torch.contiguous_format)
    graph = ProbabilityGraph(folded, predictor.open_set).eval()
    size = predictor.image_size
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)  # 2, not 1: a size-1 batch would be fixed
    try:
        program = torch.onnx.export(
            graph, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, SCORE_NAME, KNOWN_NAME],
            dynamo=True,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}}, verbose=False,
        )
    except Exception as exc:  # torch.export / onnxscript raise many types; the user gets one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExportError(f"torch could not export {metadata['backbone']} to ONNX: {first}") from exc
    program.model.metadata_props.update(metadata)
    program.model.doc_string = (f"pokedemo {metadata['backbone']} classifier: uint8 RGB pictures in, calibrated "
                                f"probabilities of {', '.join(predictor.classes)} out")
    program.save(path, external_data=False)
    return int(program.model.opset_imports.get("", 0))


# ----------------------------------------------------------------------------------------------- the check


def _parity_pictures(predictor: Predictor, data: str | os.PathLike | None) -> tuple[torch.Tensor, str, int]:
    """(uint8 pictures, where they come from, unreadable files left out): the recorded test split, or every
    picture in ``data`` (any folder layout), preprocessed as the Predictor preprocesses an upload."""
    if data is None:
        dataset, indices = recorded_split(predictor)
        return cached_tensors(dataset, indices, predictor.image_size), "recorded test split", 0
    root = Path(data)
    if not root.is_dir():
        raise ExportError(f"no folder {root} for the parity check")
    tensors, unreadable = [], 0
    for path in _picture_files(root):
        try:
            tensors.append(predictor.image_tensor(path))
        except ImageLoadError:
            unreadable += 1
    if not tensors:
        raise ExportError(f"no readable pictures in {root} for the parity check")
    return torch.cat(tensors), str(root), unreadable


def _picture_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _check(predictor: Predictor, onnx_path: Path, pictures: torch.Tensor, source: str,
           unreadable: int) -> tuple[Parity, Latency | None]:
    """onnxruntime against the Predictor on the same pictures: parity, then per-picture latency."""
    if importlib.util.find_spec("onnxruntime") is None:
        return Parity(len(pictures), source, unreadable=unreadable,
                      skipped="onnxruntime is not installed (pip install onnxruntime)"), None
    session = _session(onnx_path)
    expected, expected_scores = (t.numpy() for t in predictor.outputs(pictures))
    found, scores, known = onnx_outputs(session, pictures.numpy())
    closest = expected.argmax(1)
    limits = predictor.open_set.thresholds.numpy()[closest]
    far_from_limit = abs(expected_scores - limits) > MAX_PROBABILITY_DIFF  # rounding may tip a picture at the limit
    parity = Parity(
        pictures=len(pictures), source=source, unreadable=unreadable,
        max_abs_diff=float(abs(found - expected).max()),
        top1_agree=int((found.argmax(1) == closest).sum()),
        max_score_diff=float(abs(scores - expected_scores).max()),
        known_differ=int(((known != (expected_scores >= limits)) & far_from_limit).sum()),
    )
    return parity, _latency(predictor, session, pictures[:LATENCY_PICTURES]) if parity.passed else None


def _session(onnx_path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as the torch side
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnx_outputs(session, pictures) -> tuple[Any, Any, Any]:
    """(probabilities [N, C], open-set scores [N], known [N]) from an onnxruntime session for uint8 numpy
    pictures, PARITY_BATCH at a time."""
    names = [OUTPUT_NAME, SCORE_NAME, KNOWN_NAME]
    parts = [session.run(names, {INPUT_NAME: pictures[i:i + PARITY_BATCH]})
             for i in range(0, len(pictures), PARITY_BATCH)]
    return tuple(np.concatenate([part[k] for part in parts]) for k in range(3))


def _latency(predictor: Predictor, session, pictures: torch.Tensor) -> Latency:
    """p50 of one-picture calls, onnxruntime and the torch Predictor alternating picture by picture (a loaded
    machine then slows both alike); one warm-up call each first."""
    arrays = pictures.numpy()
    session.run([OUTPUT_NAME], {INPUT_NAME: arrays[:1]})
    predictor.probabilities(pictures[:1])
    onnx_ms, torch_ms = [], []
    for i in range(len(pictures)):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: arrays[i:i + 1]})
        middle = time.perf_counter()
        predictor.probabilities(pictures[i:i + 1])
        end = time.perf_counter()
        onnx_ms.append((middle - start) * 1e3)
        torch_ms.append((end - middle) * 1e3)
    return Latency(len(pictures), torch.get_num_threads(), round(statistics.median(onnx_ms), 2),
                   round(statistics.median(torch_ms), 2), _machine())


def _machine() -> str:
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


# ----------------------------------------------------------------------------------------------- the folder


def _model_name(spec: str | os.PathLike) -> str:
    """A run folder's name, or a Hub repo's name without its namespace and revision."""
    path = Path(spec) if Path(spec).exists() else Path(str(spec).split("@")[0])
    path = path.parent if path.name in (WEIGHTS_FILE, CONFIG_FILE) else path
    return path.resolve().name if path.exists() else path.name or "model"


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / RECORD_FILE).read_text(encoding="utf-8")).get("format") == RECORD_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(out: Path) -> None:
    """``out`` must be new, empty or an earlier export (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; give a folder to export into")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out):
        raise ExportError(f"{out} already holds other files; give a new or empty folder")


def _staging_dir(out: Path) -> Path:
    """A hidden folder beside ``out`` (same file system, so the final move is one rename)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would outlive the rename; a folder made by mkdir would not
        return staging
    except OSError as exc:
        raise ExportError(f"cannot write into {out.parent}: {exc.strerror or exc}") from None


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; an earlier export there is swapped out, then removed."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    elif out.is_dir():
        out.rmdir()
    try:
        staging.rename(out)
    except OSError as exc:
        if old is not None:
            old.rename(out)
        raise ExportError(f"cannot write {out}: {exc.strerror or exc}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _record(result: ExportResult, run_dir: Path, predictor: Predictor, opset: int) -> dict[str, Any]:
    import onnx
    import onnxscript

    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {
        "format": RECORD_FORMAT,
        "checkpoint": str(run_dir),
        "onnx_file": ONNX_FILE,
        "runtime_files": [ONNX_FILE, SCRIPT_FILE],  # what a program needs (a Hub push uploads these)
        "python_usage": python_usage(),
        "size_bytes": result.size_bytes,
        "opset": opset,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["N", 3, predictor.image_size, predictor.image_size]},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["N", len(predictor.classes)]},
        "metadata": result.metadata,
        "parity": {**asdict(result.parity), "limit": MAX_PROBABILITY_DIFF},
        "latency": asdict(result.latency) if result.latency else None,
        "versions": versions,
    }


def python_usage(picture: str = "picture.jpg") -> str:
    """The few lines of Python that classify a picture with the export (the README and the model card show them)."""
    return f"""import onnxruntime as ort
from predict_onnx import load_pixels

session = ort.InferenceSession("{ONNX_FILE}")
meta = session.get_modelmeta().custom_metadata_map
pixels = load_pixels("{picture}", int(meta["image_size"]), int(meta["max_side"]))  # uint8 [3, S, S]
probabilities = session.run(None, {{"{INPUT_NAME}": pixels[None]}})[0][0]  # in meta["class_names"] order"""


def export_readme(record: dict[str, Any]) -> str:
    """The README.md written beside model.onnx."""
    meta = record["metadata"]
    size = int(meta["image_size"])
    classes = json.loads(meta["class_names"])
    parity, latency = record["parity"], record["latency"]
    if parity.get("skipped"):
        checked = f"Parity with pokedemo was not checked: {parity['skipped']}."
    else:
        checked = (f"Checked at export: on {parity['pictures']} pictures ({parity['source']}) onnxruntime's "
                   f"probabilities differ from pokedemo's by at most {parity['max_abs_diff']:.1e} (limit "
                   f"{parity['limit']:.0e}) and the top-1 class agrees on {parity['top1_agree']} of "
                   f"{parity['pictures']}; the open-set score differs by at most "
                   f"{parity.get('max_score_diff') or 0:.1e} and the \"none of these\" answer on "
                   f"{parity.get('known_differ', 0)} pictures.")
    timing = ""
    if latency:
        timing = (f"\nCPU time per picture (p50 of {latency['pictures']} one-picture calls, {latency['threads']} "
                  f"threads, {latency['machine']}): onnxruntime {latency['onnxruntime_p50_ms']:.1f} ms, "
                  f"pokedemo's torch Predictor {latency['torch_p50_ms']:.1f} ms.\n")
    return f"""# {meta['backbone']} classifier exported from pokedemo

`{record['onnx_file']}` ({record['size_bytes'] / 1e6:.1f} MB, ONNX opset {record['opset']}) classifies a picture
into one of {len(classes)} classes: {', '.join(classes)}.

- **Input** `{record['input']['name']}`: uint8 RGB, shape `[N, 3, {size}, {size}]` (any N), pixel values 0-255.
  Scaling, normalisation (mean {meta['mean']}, std {meta['std']}) happen inside the graph.
- **Output** `{record['output']['name']}`: float32 `[N, {len(classes)}]`, calibrated probabilities
  (temperature {meta['temperature']} fitted on the validation split, already in the graph), in the order of
  the class names.
- **Metadata** (`metadata_props`; onnxruntime: `session.get_modelmeta().custom_metadata_map`): `class_names`
  (JSON list), `image_size`, `max_side`, `resize`, `mean`, `std`, `temperature`, `backbone`.

## Preprocessing: the part that must match

The model only gives pokedemo's answers when the picture is turned into pixels as pokedemo does:
{meta['resize']} (S = {size}, max_side = {meta['max_side']}). `predict_onnx.py` does exactly that with Pillow
and numpy.

{checked}
{timing}
## Use

```bash
pip install onnxruntime pillow numpy
python predict_onnx.py picture.jpg other.png          # top 5 per picture
python predict_onnx.py --json picture.jpg              # every class's probability, as JSON
```

In your own Python:

```python
{record['python_usage']}
```

An unreadable file gives one line (`error: cannot read picture.jpg: ...`) and the other pictures are still
classified; the exit status is then 1.
"""


# ----------------------------------------------------------------------------------------------- reuse


def reusable_export(folder: str | os.PathLike, run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record of an export in ``folder`` made from the weights now in ``run_dir`` and checked (or
    skipped) as a fresh export would be; None when there is none or it is stale."""
    folder = Path(folder)
    try:
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        weights = json.loads((Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8"))["weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    fresh = record.get("format") == RECORD_FORMAT and (folder / ONNX_FILE).is_file() and \
        (record.get("metadata") or {}).get("weights_sha256") == weights
    return record if fresh else None


def export_once(checkpoint: str | os.PathLike, cache_root: str | os.PathLike) -> Path:
    """The export folder of ``checkpoint`` under ``cache_root`` (``<name>-<weights hash>/onnx``: one per weights
    file), exported on first use and reused after."""
    run_dir = resolve_model(checkpoint, root=default_checkpoint_root())
    weights = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("weights_sha256", "")
    folder = Path(cache_root) / f"{_model_name(run_dir)}-{weights[:12]}" / "onnx"
    if reusable_export(folder, run_dir) is None:
        export_checkpoint(run_dir, folder)
    return folder


def model_download(checkpoint: str | os.PathLike, cache_root: str | os.PathLike) -> tuple[Path, Path, dict]:
    """(model.onnx, the run folder with its export as a zip, the export's record) of ``checkpoint``, made once
    per weights file under ``cache_root``."""
    run_dir = resolve_model(checkpoint, root=default_checkpoint_root())
    folder = export_once(run_dir, cache_root)
    archive = folder.parent / f"{_model_name(run_dir)}.zip"
    if not archive.is_file() or archive.stat().st_mtime < (folder / RECORD_FILE).stat().st_mtime:
        bundle_zip(run_dir, folder, archive)
    return folder / ONNX_FILE, archive, reusable_export(folder, run_dir) or {}


def bundle_zip(run_dir: str | os.PathLike, export_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``dest`` (a .zip): the run folder as ``<run>/…`` with the export beside its weights as ``<run>/onnx/…``."""
    run_dir, export_dir, dest = Path(run_dir), Path(export_dir), Path(dest)
    name = _model_name(run_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for folder, prefix in ((run_dir, name), (export_dir, f"{name}/onnx")):
                for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
                    archive.write(path, f"{prefix}/{path.name}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest
