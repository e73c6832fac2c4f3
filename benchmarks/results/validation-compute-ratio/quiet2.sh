#!/usr/bin/env bash
# after compute ratios: the resnet20 done-when command and resnet56 (item 5), each on an empty cache
cd /work/main
PY=.venv/bin/python
R=/tmp/q/out2
mkdir -p $R
C1=/tmp/q/cache2-r20; C2=/tmp/q/cache2-r56; rm -rf $C1 $C2; mkdir -p $C1 $C2
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C1 $PY -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out $R/resnet20 > $R/resnet20.log 2>&1; echo "resnet20 rc=$? $(date -Is)"
DDGSIM_CACHE_DIR=$C2 $PY -m ddgsim validate resnet56 --gpus 1,2 --splits 1 --steps 12 --repeats 3 --micro-batches 2 --runtimes ddgsim,torch --no-trace --out $R/resnet56 > $R/resnet56.log 2>&1; echo "resnet56 rc=$? $(date -Is)"
echo "end $(date -Is)"
