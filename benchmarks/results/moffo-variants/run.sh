#!/bin/bash
# variants of MOFFO on a problem, 60 s, seeds 0 1, 2 at a time
P=$1; shift
W=$( [ $P = mnist5k ] && echo 32 || echo 16 )
jobs=()
for v in "$@"; do
 for s in 0 1; do
  name=$(echo "$v" | sed 's/ /_/g; s/=/-/g'); out=benchmarks/results/moffo-variants/runs/$P/$name/seed$s
  [ -f $out/summary.json ] && continue
  sets=""; for kv in $v; do [ $kv = default ] || sets="$sets --set method.$kv"; done
  echo ".venv/bin/mldd train --problem $P --method moffo --set problem.width=$W --set problem.depth=9 --set method.batch_size=64 $sets --budget 60 --seed $s --threads 1 --dtype float64 --log-every 1.2 --no-plots --out $out > /dev/null 2>&1"
 done
done | xargs -P 2 -I{} bash -c {}
