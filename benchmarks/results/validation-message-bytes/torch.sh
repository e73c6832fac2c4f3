cd /work/main
echo "start $(date -Is)"
for B in 128 64; do
DDGSIM_CACHE_DIR=/tmp/q5/cache-r20 .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --schedules gpipe,1f1b --micro-batches 2,4 --splits 1 --steps 12 --repeats 5 --batch-size $B --runtimes ddgsim,torch --reprofile --no-trace --out /tmp/q5/torch-b$B > /tmp/q5/torch-b$B.log 2>&1; echo "torch-b$B rc=$? $(date -Is)"
done
