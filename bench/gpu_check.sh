#!/usr/bin/env bash
# The GPU checks of issue 15, as one script for a lent GPU machine (it has PyTorch, not this
# project's other packages: Flask and waitress come as wheels in .whl/, dlib does not, so faces
# are left out). Usage, from the repository root there:
#   bash bench/gpu_check.sh DATA WEIGHTS_DIR OUT_DIR
# 1. the CUDA tests (tests marked cuda); 2. the four-model compare on DATA on the GPU, with each
# model's training seconds from its card; 3. the same training on the GPU and on the machine's CPU
# cores (two epochs of alexnet_like and of mobilenet_v2), images/s and the ratio; 4. `sort` of DATA
# with the mobilenet_v2 of step 2 on the GPU and on the CPU: the same labels (issue 27).
#
# What travels to the device machine is at most 64 MiB per call, and ../shared does not travel:
# a copy of the athletes photos resized to a 240 px short side (10 MB), the MobileNetV2 weights
# and the wheels fit one call; the 98 MB ResNet-50 file needs two (`head -c 62000000` in the
# first, the rest in the second, then `cat` them into WEIGHTS_DIR: its SHA-256 is checked on load).
# Without it, step 2 compares three models and says so.
set -uo pipefail
DATA=$1 WEIGHTS=$2 OUT=$3
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src:/tmp/site:${PYTHONPATH:-}" IMAGE_CLASSIFIER_WEIGHTS="$WEIGHTS"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
nvidia-smi -L; python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name(0))"
nproc

echo "== 1. CUDA tests"
timeout 150 python3 -m pytest -q -m cuda -rs -p no:cacheprovider tests/test_cuda_training.py tests/test_device_inference.py \
    2>&1 | tee "$OUT/cuda_tests.log" | tail -25

echo "== 2. four-model compare on the GPU"
models=simple_cnn,alexnet_like,mobilenet_v2
weights=(--weights "mobilenet_v2=$WEIGHTS/mobilenet_v2-b0353104.pth")
if [ -f "$WEIGHTS/resnet50-keras-imagenet.pth" ]; then
    models=$models,resnet50; weights+=(--weights "resnet50=$WEIGHTS/resnet50-keras-imagenet.pth")
else
    echo "no ResNet-50 weights here: three models only"
fi
t0=$(date +%s.%N)
timeout 300 python3 -m image_classifier compare "$DATA" --models "$models" "${weights[@]}" --device cuda \
    --no-faces --no-export --speed-repeats 3 --no-progress --out /tmp/gpu_compare --cache-dir /tmp/gpu_cache \
    > "$OUT/compare.log" 2>&1
echo "compare exit $?, wall $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
tail -25 "$OUT/compare.log"
cp /tmp/gpu_compare/comparison.csv /tmp/gpu_compare/report.md "$OUT/" 2>/dev/null
python3 - <<'EOF'
import json, pathlib
root = pathlib.Path("/tmp/gpu_compare/models")
total = 0.0
print("| model | device | precision | epochs | training s | images/s (median epoch) | val acc |")
print("|---|---|---|---|---|---|---|")
for card_path in sorted(root.glob("*/model.json")):
    c = json.loads(card_path.read_text())
    if "history" not in c:
        continue
    rates = sorted(h["images_per_s"] for h in c["history"])
    total += c["train_seconds"]
    print(f"| {c['architecture']} | {c.get('device', {}).get('name')} | {c['precision']} | {len(c['history'])} | "
          f"{c['train_seconds']:.1f} | {rates[len(rates) // 2]:.0f} | {c['best']['val_accuracy']:.3f} |")
print(f"training time, all models: {total:.1f} s")
EOF

echo "== 3. GPU against the CPU cores: two epochs each"
for arch in alexnet_like mobilenet_v2; do
    for dev in cuda cpu; do
        w=(); [ "$arch" = mobilenet_v2 ] && w=(--weights "$WEIGHTS/mobilenet_v2-b0353104.pth")
        timeout 120 python3 -m image_classifier train "$DATA" --arch "$arch" "${w[@]}" --epochs 2 --device "$dev" \
            --out "/tmp/speed_${arch}_$dev" --force --no-progress --cache-dir /tmp/gpu_cache > "$OUT/speed_${arch}_$dev.log" 2>&1 \
            || echo "$arch on $dev: exit $? (timeout 120 s: see the log)"
    done
done
python3 - <<'EOF'
import json, pathlib
print("| model | GPU images/s | CPU images/s | GPU / CPU |")
print("|---|---|---|---|")
for arch in ("alexnet_like", "mobilenet_v2"):
    rate = {}
    for dev in ("cuda", "cpu"):
        p = pathlib.Path(f"/tmp/speed_{arch}_{dev}/model.json")
        if p.is_file():
            c = json.loads(p.read_text())
            # Last epoch: the first includes cuDNN's autotuning and the feature views' computation.
            rate[dev] = c["history"][-1]["images_per_s"]
    g, c = rate.get("cuda"), rate.get("cpu")
    print(f"| {arch} | {g or float('nan'):.0f} | {c or float('nan'):.0f} | {(g / c) if g and c else float('nan'):.1f}x |")
EOF

echo "== 4. sort on the GPU against the CPU (issue 27; a CNN of step 2: faces need dlib, not on this machine)"
for dev in cuda cpu; do
    t0=$(date +%s.%N)
    timeout 200 python3 -m image_classifier sort /tmp/gpu_compare/models/mobilenet_v2 "$DATA" --out "/tmp/sort_$dev" \
        --device "$dev" --no-progress > "$OUT/sort_$dev.log" 2>&1
    echo "sort on $dev: exit $?, wall $(python3 -c "import time; print(round(time.time() - $t0, 1))") s"
done
python3 - <<'EOF'
import csv
rows = {dev: list(csv.DictReader(open(f"/tmp/sort_{dev}/predictions.csv"))) for dev in ("cuda", "cpu")}
same = sum(a["label"] == b["label"] for a, b in zip(rows["cuda"], rows["cpu"]))
worst = max(abs(float(a["probability"]) - float(b["probability"])) for a, b in zip(rows["cuda"], rows["cpu"]))
print(f"{len(rows['cuda'])} photos: the same label on {same}; largest probability difference {worst:.2e}")
EOF
