cd /work/main
C=/tmp/s3/cache-mlp; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate mlp --gpus 1,2 --splits 2 --steps 12 --out /tmp/s3/mlp > /tmp/s3/mlp.log 2>&1
