#!/usr/bin/env bash
# Restore the distillation study's four networks (teacher v0.2, 1- and 2-step students, regression;
# 9.1 MB each, fp16 safetensors) from git history into this folder.
#
# They left the working tree so that it stays under the 64 MiB a GPU job can carry
# (gpu/check.sh, gpu/train.sh); the files are unchanged, byte for byte, in commit 81eb9ba.
# Needs a clone with history (not --depth 1). Run before configs/eval/distillation.yaml or the
# distill_*.yaml training configs:
#   bash models/distillation/restore_weights.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
commit=81eb9ba7a071cf794eb0700481c215d48942005b
for name in teacher-v0.2 student-1step student-2step regression; do
    path=models/distillation/$name/flow/diffusion_pytorch_model.safetensors
    git cat-file -e "$commit:$path" 2>/dev/null || {
        echo "restore_weights.sh: error: $path is not in this clone's history (clone without --depth)" >&2; exit 1; }
    git show "$commit:$path" > "$path.tmp" && mv "$path.tmp" "$path"
    echo "restored $path ($(du -h "$path" | cut -f1))"
done
