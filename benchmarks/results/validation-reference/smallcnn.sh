cd /work/main
C=/tmp/q3/cache-smallcnn; rm -rf $C; mkdir -p $C
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate smallcnn --gpus 1,2 --splits 2 --steps 12 --out /tmp/q3/smallcnn > /tmp/q3/smallcnn.log 2>&1; echo "smallcnn rc=$? $(date -Is)"
