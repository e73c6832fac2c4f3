cd /work/main
C=/tmp/c2; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate mlp --gpus 1,2 --splits 2 --steps 12 --out /tmp/m1 > /tmp/m1.log 2>&1
