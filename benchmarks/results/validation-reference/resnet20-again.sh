cd /work/main
C=/tmp/q4/cache-r20b; rm -rf $C; mkdir -p $C
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/q4/resnet20b > /tmp/q4/resnet20b.log 2>&1; echo "resnet20b rc=$? $(date -Is)"
