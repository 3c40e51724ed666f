# The runs behind the README's batch-size table (about 30 minutes on 2 cores); then python docs/large_batch/report.py
set -euxo pipefail
cd "$(dirname "$0")/../.."
R=docs/large_batch/runs
aevb-fast train --dataset mnist --batch-size 4096 --samples 1e7 --out $R/mnist-b4096-n1e7 --no-plots
aevb-fast train --dataset mnist --batch-size 16384 --samples 1e7 --out $R/mnist-b16384-n1e7 --no-plots
aevb-fast train --dataset mnist --batch-size 1024 --samples 1e7 --out $R/mnist-b1024-n1e7 --no-plots
torchrun --nproc-per-node 2 -m aevb_fast.cli train --dataset mnist --batch-size 16384 --samples 2e6 --out $R/mnist-b16384-n2e6-torchrun2 --no-plots
aevb-fast train --dataset mnist --batch-size 16384 --samples 2e6 --out $R/mnist-b16384-n2e6 --no-plots
