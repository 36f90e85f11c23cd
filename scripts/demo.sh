#!/usr/bin/env bash
# The main job on the built-in sample: dataset -> LeNet from scratch -> EfficientNet-Lite0
# fine-tuned -> classify. Runs in the default store (~/.shoal, or $SHOAL_HOME), so the web
# app (`shoal serve`) shows the results afterwards. Safe to run again: it replaces its models.
set -euo pipefail
shoal=${SHOAL:-.venv/bin/shoal}

echo "== 1. Dataset: scikit-learn's 1,797 handwritten digits as a folder of PNGs, stored at 64x64"
$shoal dataset sample --size 64

for model in digits-lenet digits-lite0; do
    $shoal model delete "$model" >/dev/null 2>&1 || true
done

echo
echo "== 2. LeNet trained from scratch (10 epochs)"
$shoal train --dataset digits --network lenet --epochs 10 --lr 0.05 --name digits-lenet

echo
echo "== 3. EfficientNet-Lite0 fine-tuned from its ImageNet weights"
$shoal train --dataset digits --pretrained --name digits-lite0

echo
echo "== 4. Both models on three validation images"
python=$(dirname "$shoal")/python
images=$($python -c 'from shoal import datasets; print(" ".join(datasets.load("digits").sources("val")[::150][:3]))')
$shoal classify digits-lenet $images --top 2
$shoal classify digits-lite0 $images --top 2

echo
$shoal model list
cat <<'TXT'

The same on your own folder (one sub-folder of images per class):

  .venv/bin/shoal dataset create path/to/photos --name photos
  .venv/bin/shoal train --dataset photos --pretrained --name photos-model
  .venv/bin/shoal classify photos-model new-photo.jpg

Then `.venv/bin/shoal serve` opens the web app on http://127.0.0.1:5000
TXT
