cd /work/main
C=/tmp/q5/cache-smallcnn; rm -rf $C; mkdir -p $C
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate smallcnn --gpus 1,2 --splits 2 --steps 12 --out /tmp/q5/smallcnn > /tmp/q5/smallcnn.log 2>&1; echo "smallcnn rc=$? $(date -Is)"
cd /work/main
C=/tmp/q5/cache-r20; rm -rf $C; mkdir -p $C
echo "start $(date -Is)"
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1,2 --splits 2 --steps 12 --out /tmp/q5/resnet20 > /tmp/q5/resnet20.log 2>&1; echo "resnet20 rc=$? $(date -Is)"
C=/tmp/q5/cache-mlp; rm -rf $C; mkdir -p $C
DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate mlp --gpus 1,2 --splits 2 --steps 12 --out /tmp/q5/mlp > /tmp/q5/mlp.log 2>&1; echo "mlp rc=$? $(date -Is)"
