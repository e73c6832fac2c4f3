P=/work/main/.venv/bin/python
for r in 1 2 3; do
  for p in one dp pp; do
    $P -m ddgsim execute $p.json --steps 20 --data synthetic --no-eval --no-progress --metrics m-$p-$r.json 2>&1 | grep -E "predicted|^ddg|^bp" | sed "s/^/$p $r: /"
  done
done
