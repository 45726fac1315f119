#!/usr/bin/env bash
# The GPU checks and benchmarks in one run, for a GPU machine with PyTorch but not the service
# (./benchmarks/gpu.sh [OUTDIR]): the CUDA fast-path tests, the serving engine with batching on
# and off, training throughput against the plain baseline (with MFU), then compile and CUDA graphs.
out=${1:-${OUT:-/tmp/dm-gpu}}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
$py -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"
timeout 200 $py -m benchmarks.train_throughput --steps 30 \
  --configs simclr-r18-128,simclr-r18-512,mae-vits-224,mae-vits-128,dino-vits-128 2>&1 | tee "$out/train.txt"
timeout 90 $py -m benchmarks.embed_engine --seconds 3 --clients 1,8,64 2>&1 | tee "$out/serving.txt"
timeout 150 $py -m pytest -q --noconftest -p no:cacheprovider tests/core/test_cuda_paths.py 2>&1 | tee "$out/cuda_tests.txt"
timeout 200 $py -m benchmarks.train_throughput --steps 30 --warmup 6 --configs simclr-r18-512,mae-vits-224 \
  --variants eager,compile,graphs 2>&1 | grep -v "^W1\|^  warn" | tee "$out/compile.txt"
