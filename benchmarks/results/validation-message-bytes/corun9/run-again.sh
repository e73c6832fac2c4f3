cd /work/main
echo "start $(date -Is)"
C=/tmp/q7/cache-r20; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/q7/resnet20 > /tmp/q7/resnet20.log 2>&1; echo "resnet20 rc=$? $(date -Is)"
C=/tmp/q7/cache-r56; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet56 --gpus 1,2 --splits 1 --steps 12 --repeats 3 --micro-batches 2 --runtimes ddgsim,torch --no-trace --out /tmp/q7/resnet56 > /tmp/q7/resnet56.log 2>&1; echo "resnet56 rc=$? $(date -Is)"
