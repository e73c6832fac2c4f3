#!/usr/bin/env bash
# issue 28's done-when commands, each as a new user on an empty cache, then the torch runtime cases
cd /work/main
PY=.venv/bin/python
R=/tmp/q/out
mkdir -p $R
C1=/tmp/q/cache-r20; C2=/tmp/q/cache-mlp; rm -rf $C1 $C2; mkdir -p $C1 $C2
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C1 $PY -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out $R/resnet20 > $R/resnet20.log 2>&1; echo "resnet20 rc=$? $(date -Is)"
DDGSIM_CACHE_DIR=$C2 $PY -m ddgsim validate mlp --gpus 1,2 --splits 2 --steps 12 --out $R/mlp > $R/mlp.log 2>&1; echo "mlp rc=$? $(date -Is)"
for B in 128 64; do
DDGSIM_CACHE_DIR=$C1 $PY -m ddgsim validate resnet20 --gpus 1,2 --schedules gpipe,1f1b --micro-batches 2,4 --splits 1 --steps 12 --repeats 5 --batch-size $B --runtimes ddgsim,torch --no-trace --out $R/torch-b$B > $R/torch-b$B.log 2>&1; echo "torch-b$B rc=$? $(date -Is)"
done
echo "end $(date -Is)"
