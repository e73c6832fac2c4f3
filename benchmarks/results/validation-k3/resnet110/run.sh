cd /work/main
echo "start $(date -Is)"
C=/tmp/s2/cache-r110; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet110 --gpus 1,2 --splits 1 --steps 8 --out /tmp/s2/resnet110 > /tmp/s2/resnet110.log 2>&1; echo "resnet110 rc=$? $(date -Is)"
