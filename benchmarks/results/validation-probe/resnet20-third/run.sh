cd /work/main
C=/tmp/s3/cache; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/s3/r20 > /tmp/s3/r20.log 2>&1
