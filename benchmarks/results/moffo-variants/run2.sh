#!/bin/bash
# usage: run2.sh PROBLEM WIDTH "method:opts" ...   (opts space separated k=v)
P=$1; W=$2; shift 2
for v in "$@"; do
 m=${v%%:*}; o=${v#*:}
 for s in 0 1; do
  name=$m-$(echo "$o" | sed 's/ /_/g; s/=/-/g'); out=benchmarks/results/moffo-variants/runs/$P-w$W/$name/seed$s
  [ -f $out/summary.json ] && continue
  mkdir -p $(dirname $out); sets=""; for kv in $o; do sets="$sets --set method.$kv"; done
  echo ".venv/bin/mldd train --problem $P --method $m --set problem.width=$W --set problem.depth=9 --set method.batch_size=64 $sets --budget 60 --seed $s --threads 1 --dtype float64 --log-every 1.2 --no-plots --out $out > $out.log 2>&1"
 done
done | xargs -P 2 -I{} bash -c {}
