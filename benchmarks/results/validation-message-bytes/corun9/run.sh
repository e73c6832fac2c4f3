cd /work/main
echo "start $(date -Is)"
C=/tmp/q6/cache-r20; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/q6/resnet20 > /tmp/q6/resnet20.log 2>&1; echo "resnet20 rc=$? $(date -Is)"
for B in 128 64; do
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --schedules gpipe,1f1b --micro-batches 2,4 --splits 1 --steps 12 --repeats 5 --batch-size $B --runtimes ddgsim,torch --reprofile --no-trace --out /tmp/q6/torch-b$B > /tmp/q6/torch-b$B.log 2>&1; echo "torch-b$B rc=$? $(date -Is)"
done
