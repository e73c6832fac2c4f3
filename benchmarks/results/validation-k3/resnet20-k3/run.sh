cd /work/main
echo "start $(date -Is)"
C=/tmp/s3/cache-r20; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,3 --splits 2 --steps 12 --out /tmp/s3/resnet20-k3 > /tmp/s3/resnet20-k3.log 2>&1; echo "resnet20 K=3 rc=$? $(date -Is)"
