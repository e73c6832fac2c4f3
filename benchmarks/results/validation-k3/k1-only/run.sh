C=/tmp/s6/cache; rm -rf $C; mkdir -p $C; DDGSIM_CACHE_DIR=$C .venv/bin/python -m ddgsim validate resnet20 --gpus 1 --repeats 6 --steps 12 --no-trace --out /tmp/s6/k1 > /tmp/s6/k1.log 2>&1
