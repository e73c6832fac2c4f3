cd /work/main
C=/tmp/c3; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/r2 > /tmp/r2.log 2>&1
