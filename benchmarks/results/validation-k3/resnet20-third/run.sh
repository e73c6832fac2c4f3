cd /work/main
echo "start $(date -Is)"
C=/tmp/s5/cache-r20; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/s5/resnet20 > /tmp/s5/resnet20.log 2>&1; echo "resnet20 rc=$? $(date -Is)"
