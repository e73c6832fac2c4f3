cd /work/main
C=/tmp/s1/cache-r20; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/s1/resnet20 > /tmp/s1/resnet20.log 2>&1
