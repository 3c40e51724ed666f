# The dedicated runs behind the README's batch-size table (about 40 minutes on 2 cores, one at a time
# with nothing else on the machine); then python docs/large_batch/report.py. Each budget is its own
# run: the learning-rate schedule follows --samples.
set -euxo pipefail
cd "$(dirname "$0")/../.."
R=docs/large_batch/runs
for M in 4096 16384; do
  for N in 2e6 1e7; do
    aevb-fast train --dataset mnist --batch-size $M --samples $N --out $R/mnist-b$M-n$N --no-plots --overwrite
  done
done
# A second seed where a result is within 2 nats of its target.
aevb-fast train --dataset mnist --batch-size 4096 --samples 2e6 --seed 1 --out $R/mnist-b4096-n2e6-s1 --no-plots --overwrite
aevb-fast train --dataset mnist --batch-size 4096 --samples 1e7 --seed 1 --out $R/mnist-b4096-n1e7-s1 --no-plots --overwrite
torchrun --nproc-per-node 2 -m aevb_fast.cli train --dataset mnist --batch-size 16384 --samples 2e6 --out $R/mnist-b16384-n2e6-torchrun2 --no-plots --overwrite
