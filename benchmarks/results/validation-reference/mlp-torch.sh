cd /work/main
C=/tmp/q4/cache-mlp; rm -rf $C; mkdir -p $C
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate mlp --gpus 1,2 --splits 2 --steps 12 --out /tmp/q4/mlp > /tmp/q4/mlp.log 2>&1; echo "mlp rc=$? $(date -Is)"
DDGSIM_CACHE_DIR=/tmp/q4/cache-r20 .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --schedules gpipe,1f1b --micro-batches 2,4 --splits 1 --steps 12 --repeats 5 --batch-size 64 --runtimes ddgsim,torch --no-trace --out /tmp/q4/torch-b64 > /tmp/q4/torch-b64.log 2>&1; echo "torch-b64 rc=$? $(date -Is)"
