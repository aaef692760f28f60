#!/usr/bin/env bash
# The CUDA path measured on a real NVIDIA GPU (README, Deploy): strict-provider tests, the fp16 package's parity
# against PyTorch on the GPU, ours fp16 against CTranslate2 float16 (greedy and beam 4, batch 1, 32 and 128),
# and the HTTP service on the CUDA provider under 32 and 128 connections.
#
# Written for a GPU machine with Python 3.12, PyTorch and CUDA 13 libraries but no package index and at most
# 64 MiB per transfer (this workplace's device machines): what the run needs travels in three parts, each
# unpacked into $STAGE, which outlives the calls while the machine stays up.
#
#   here:     bench/gpu_check.sh pack                  # .gpu/part1..3 (pinned wheels, sm_90 CUDA provider, checkpoint)
#             move checkpoints/, models/ and data/en-de/train.tsv aside while the device calls run (the working
#             tree travels too), then put them back
#   device:   bench/gpu_check.sh smoke     (carry .gpu/part1)   ONNX Runtime's CUDA provider loads and runs
#             bench/gpu_check.sh tests     (carry .gpu/part2)   pytest tests/test_cuda.py + fp16 export/parity on CUDA
#             bench/gpu_check.sh diagnose  (after tests)        CUDA against the CPU node by node (bench/cuda_diagnose.py)
#             bench/gpu_check.sh bench     (carry .gpu/part3)   bench.engines and bench.http_load on the GPU
#
# Results go to $OUT (or results/gpu/ when OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/.."
STAGE=${STAGE:-/tmp/gpu}
OUT=${OUT:-results/gpu}
ORT_GPU=onnxruntime-gpu==1.31.1  # pyproject's `gpu` extra
CT2=ctranslate2==4.8.5           # pyproject's `bench` extra
SM=${SM:-90}                     # the GPU's architecture: 90 for Hopper (H100, H200)
PY_TAGS=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
         --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
         --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any)
SERVICE_WHEELS=(fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv uvicorn httptools
                python-multipart py3langid sentencex python-docx typing-inspection annotated-types defusedxml
                opentelemetry-api typing_extensions)

pinned() {  # NAME → NAME==VERSION from requirements/constraints.txt
  local line
  line=$(grep -i -E "^${1//[-_]/[-_]}==" requirements/constraints.txt) || { echo "no pin for $1" >&2; exit 1; }
  echo "$line"
}

pack() {
  local work=.gpu/work
  rm -rf .gpu && mkdir -p .gpu/part1 .gpu/part2/wheels .gpu/part2/checkpoint .gpu/part2/wrk .gpu/part3 "$work/ort"
  python3 -m pip download -q --no-deps "${PY_TAGS[@]}" -d "$work" "$ORT_GPU" "$CT2"
  # part 1: onnxruntime-gpu without its C API library and TensorRT provider, the CUDA provider pruned to one SM
  unzip -q "$work"/onnxruntime_gpu-*.whl -d "$work/ort"
  rm "$work"/ort/onnxruntime/capi/libonnxruntime.so.* "$work"/ort/onnxruntime/capi/libonnxruntime_providers_tensorrt.so
  python3 -m bench.fatbin_prune "$work/ort/onnxruntime/capi/libonnxruntime_providers_cuda.so" "$work/cuda.so" --keep "$SM"
  mv "$work/cuda.so" "$work/ort/onnxruntime/capi/libonnxruntime_providers_cuda.so"
  local python_parts=(onnxruntime/transformers onnxruntime/tools onnxruntime/quantization onnxruntime/datasets)
  tar -C "$work/ort" -cf - "${python_parts[@]}" | xz -9 > .gpu/part1/ort_python.tar.xz  # pure Python, apart
  (cd "$work/ort" && rm -rf "${python_parts[@]}" && tar -cf - .) | xz -9 -T2 > .gpu/part1/ort.tar.xz
  # part 2: the checkpoint, the service's wheels at their pins, wrk with its libraries
  cp checkpoints/en-de/{config.json,model.safetensors,spm.model,spm.vocab} .gpu/part2/checkpoint/
  local wheel pins=()
  for wheel in "${SERVICE_WHEELS[@]}"; do pins+=("$(pinned "$wheel")"); done
  python3 -m pip download -q --no-deps "${PY_TAGS[@]}" -d .gpu/part2/wheels "${pins[@]}"
  python3 -m pip wheel -q --no-deps -w .gpu/part2/wheels "$(pinned odfpy)"  # published as a source archive only
  cp "$(command -v wrk)" .gpu/part2/wrk/
  ldd "$(command -v wrk)" | awk '/libluajit|libssl|libcrypto/ {print $3}' | xargs -r cp -t .gpu/part2/wrk/
  # part 3: CTranslate2
  mv "$work"/ctranslate2-*.whl .gpu/part3/
  rm -rf "$work"
  du -sh .gpu/part*
}

unpack() {  # PART → its files under $STAGE
  mkdir -p "$STAGE/site"
  case $1 in
    1) xz -dc .gpu/part1/ort.tar.xz | tar -C "$STAGE/site" -xf -
       xz -dc .gpu/part1/ort_python.tar.xz | tar -C "$STAGE/site" -xf - ;;
    2) python3 -m pip install -q --no-index --no-deps --no-compile --target "$STAGE/site" .gpu/part2/wheels/*.whl
       cp -r .gpu/part2/checkpoint .gpu/part2/wrk "$STAGE/" ;;
    3) python3 -m pip install -q --no-index --no-deps --no-compile --target "$STAGE/site" .gpu/part3/*.whl ;;
  esac
}

environment() {  # the staged packages first; CUDA libraries from the image's NVIDIA wheels and toolkit
  [[ -d $STAGE/site/onnxruntime ]] || { echo "STAGE MISSING: $STAGE has no onnxruntime (the machine was restarted?)"; exit 3; }
  export PYTHONPATH="$STAGE/site:$PWD"
  local libs
  libs=$(python3 - <<'EOF'
import glob, os, site
dirs = {os.path.dirname(p) for root in site.getsitepackages() for p in glob.glob(f"{root}/nvidia/**/lib*.so*", recursive=True)}
print(":".join(sorted(dirs) + ["/usr/local/cuda/lib64"]))
EOF
)
  # CTranslate2 4.8.5 is built against CUDA 12 and opens libcublas.so.12 by name; CUDA 13's cuBLAS keeps that API.
  mkdir -p "$STAGE/cu12"
  local lib
  for lib in libcublas libcublasLt; do
    local found
    found=$(tr ':' '\n' <<<"$libs" | while read -r d; do ls "$d/$lib.so.13" 2>/dev/null; done | head -1 || true)
    [[ -n $found ]] && ln -sf "$found" "$STAGE/cu12/$lib.so.12"
  done
  export LD_LIBRARY_PATH="$libs:$STAGE/cu12${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  mkdir -p "$STAGE/bin"
  if [[ -x $STAGE/wrk/wrk ]]; then  # wrk with its own libraries, which nothing else should load
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$STAGE/wrk" "$STAGE/wrk/wrk" > "$STAGE/bin/wrk"
    chmod +x "$STAGE/bin/wrk"
  fi
  export PATH="$STAGE/bin:$PATH" PYTHONUNBUFFERED=1
  mkdir -p "$OUT"
}

smoke() {
  unpack 1
  environment
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/smoke.txt"
  python3 - <<'EOF' | tee -a "$OUT/smoke.txt"
import numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto, helper
print("onnxruntime", ort.__version__, ort.get_available_providers())
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])
w = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], np.eye(64, dtype=np.float32).ravel())
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])], "g", [x], [y], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
print("session providers", session.get_providers())
data = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
got = session.run(None, {"x": data})[0]
want = np.exp(data) / np.exp(data).sum(-1, keepdims=True)
print("max abs diff", float(np.abs(got - want).max()))
assert session.get_providers()[0] == "CUDAExecutionProvider" and np.allclose(got, want, atol=1e-3)  # TF32 MatMul
print("SMOKE OK")
EOF
}

diagnose() {  # where CUDA and the CPU part ways, on the tiny test model (parts 1 and 2 unpacked by smoke and tests)
  environment
  python3 - "$STAGE/tiny" <<'EOF'
import sys
from pathlib import Path
from export.package import build_package
from tests.tiny_model import make_checkpoint
out = Path(sys.argv[1])
checkpoint = make_checkpoint(out / "checkpoint", n_heads=1)  # head size 32: the CUDA attention kernel takes 32, 64, 128
for precision in ("fp32", "fp16"):
    build_package(checkpoint, out / precision, precision, max_source_tokens=64)
EOF
  python3 -m bench.cuda_diagnose "$STAGE/tiny/fp32" "$STAGE/tiny/fp16" 2>&1 | grep -v 'Memcpy nodes\|plugin EP' | tee "$OUT/diagnose.txt"
}

tests() {
  unpack 2
  environment
  set +e
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_runtime.py tests/test_decoding.py 2>&1 | tee "$OUT/pytest.txt"
  python3 -m export --checkpoint "$STAGE/checkpoint" --out "$STAGE/packages/en-de-fp16" --precision fp16 --device cuda \
      --parity-data data/en-de/test.tsv --parity-sentences 500 > "$OUT/export_fp16.txt" 2>&1
  echo "export exit $?" | tee -a "$OUT/export_fp16.txt"
  local parity
  for parity in "$STAGE"/packages/en-de-fp16/parity.json "$STAGE"/packages/.en-de-fp16.staging/parity.json; do
    [[ -f $parity ]] && cp "$parity" "$OUT/parity_fp16.json" && break
  done
  tail -25 "$OUT/export_fp16.txt"
  local written=("$STAGE"/packages/en-de-fp16 "$STAGE"/packages/.en-de-fp16.staging)  # the second when parity failed
  python3 -m bench.cuda_diagnose $(for d in "${written[@]}"; do [[ -f $d/package.json ]] && echo "$d"; done) 2>&1 \
      | grep -v 'Memcpy nodes\|plugin EP' | tee "$OUT/diagnose.txt"
}

bench() {
  unpack 3
  environment
  [[ -f $STAGE/packages/en-de-fp16/package.json ]] || { echo "no fp16 package: run tests first"; exit 3; }
  mkdir -p "$STAGE/models" && rm -rf "$STAGE/models/en-de" && cp -r "$STAGE/packages/en-de-fp16" "$STAGE/models/en-de"
  set +e
  timeout 300 python3 -m bench.engines --device cuda --checkpoint "$STAGE/checkpoint" --fp16-package "$STAGE/packages/en-de-fp16" \
      --engines ort-fp16,ct2-float16 --batch-sizes 1,32,128 --beam-sizes 1,4 --limit 256 --threads 1 --lengths 8,32,128 \
      --ct2-cache "$STAGE/ct2" --out "$OUT/gpu_engines.json" 2>&1 | tail -40
  local cuda=(--models-dir "$STAGE/models" --env TRANSLATOR_PROVIDERS=CUDAExecutionProvider --env TRANSLATOR_STRICT_PROVIDERS=true
              --variant defaults: --variant gpu-batches:TRANSLATOR_MAX_BATCH_SENTENCES=128,TRANSLATOR_BATCH_TOKEN_BUDGET=16384
              --seconds 10 --warmup 2 --no-offline)
  timeout 150 python3 -m bench.http_load "${cuda[@]}" --connections 32 --out "$OUT/gpu_http_32.json" 2>&1 | tail -30
  timeout 120 python3 -m bench.http_load "${cuda[@]}" --connections 128 --no-one-connection --out "$OUT/gpu_http_128.json" 2>&1 | tail -20
}

"${1:?usage: bench/gpu_check.sh pack|smoke|tests|bench}"
