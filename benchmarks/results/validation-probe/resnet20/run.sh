cd /work/main
C=/tmp/c1; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/r1 > /tmp/r1.log 2>&1
