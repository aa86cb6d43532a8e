#!/usr/bin/env bash
# The published-effect run (issue 8, part 4) as one script: pull the model, extract the 7
# behaviors at every layer, a coarse layer sweep, then multipliers -2..2 at the chosen layer
# (baked checkpoints reloaded from disk beside the hook variant), MMLU / TruthfulQA on an
# evenly spread subset, and the finetuning baseline with its combined models.
#
# Every knob is an environment variable (defaults: the GPU run in docs/results/qwen2.5-1.5b/):
#   MODEL, DEVICE, DTYPE, BS (lm-eval / extraction batch), SWEEP_LAYERS, SWEEP_MULTS,
#   MULTS, CAP_LIMIT (MMLU / TruthfulQA items, round-robin over categories), FT_BEHAVIORS,
#   FT_ARGS, PULL_SOURCE (folder of the model's wheels for `models pull --source`),
#   LOGS (where logs + results.tgz go), DEADLINE_S (skip a stage that would start later).
# Each stage logs to $LOGS/<stage>.log and its wall time to $LOGS/timeline.txt; after each
# stage results/ and vectors/ are packed into $LOGS/results.tgz, so a run stopped early still
# returns what it finished.
set -u
MODEL=${MODEL:-qwen2.5-coder-1.5b-instruct}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
BS=${BS:-64}
SWEEP_LAYERS=${SWEEP_LAYERS:-6,9,12,15,18,21}
SWEEP_MULTS=${SWEEP_MULTS:--1,1}
MULTS=${MULTS:--2,-1,0,1,2}
CAP_LIMIT=${CAP_LIMIT:-114}
FT_BEHAVIORS=${FT_BEHAVIORS:-refusal corrigible-neutral-HHH}
FT_ARGS=${FT_ARGS:-}
LOGS=${LOGS:-${OUT:-effect-logs}}
DEADLINE_S=${DEADLINE_S:-100000}
mkdir -p "$LOGS"
PY=${PY:-python3}
cb() { "$PY" -m cli.main "$@"; }
log() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$LOGS/timeline.txt"; }
PACK=${PACK:-$LOGS/results.tgz}
pack() { tar czf "$PACK.tmp" results vectors "$LOGS" 2>/dev/null; mv "$PACK.tmp" "$PACK"; }
stage() {
    local name=$1 need=$2
    shift 2
    if ((SECONDS + need > DEADLINE_S)); then
        log "skip $name (needs ~${need}s, $((DEADLINE_S - SECONDS))s left)"
        return 1
    fi
    log "start $name: $*"
    local t0=$SECONDS
    "$@" >"$LOGS/$name.log" 2>&1
    local rc=$?
    log "end $name rc=$rc wall=$((SECONDS - t0))s"
    tail -n 4 "$LOGS/$name.log" | sed 's/^/    /' | cut -c1-300
    pack
    return $rc
}
clean_exports() { # baked exports are rebuilt on demand; finetuned models (ft-*) are kept
    find exported_models -mindepth 1 -maxdepth 1 -type d ! -name 'ft-*' -exec rm -rf {} +
}
common=(--model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" -q)
log "model $MODEL device $DEVICE dtype $DTYPE batch $BS"
"$PY" -c 'import torch, transformers, lm_eval; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__, "lm_eval", lm_eval.__version__)' | tee -a "$LOGS/timeline.txt"

[ -n "${SKIP_DATASETS_PULL:-}" ] || cb datasets pull -q >"$LOGS/datasets.log" 2>&1 || { log "datasets pull failed"; cat "$LOGS/datasets.log"; exit 1; }
stage pull 60 cb models pull "$MODEL" ${PULL_SOURCE:+--source "$PULL_SOURCE"} -q || exit 1
stage extract 60 cb extract --all-behaviors --layers all --batch-size "$BS" "${common[@]}" || exit 1

# the finetuning baseline runs beside the sweep and evaluation (one GPU, plenty of memory)
ft_chain() {
    for b in $FT_BEHAVIORS; do
        for d in pos neg; do
            log "finetune $b $d"
            cb finetune --behavior "$b" --direction "$d" --model "$MODEL" \
                --out "exported_models/ft-$b-$d" -q $FT_ARGS || log "finetune $b $d failed"
        done
    done
}
if [ "$DEVICE" != cpu ] || [ -n "${FT_ON_CPU:-}" ]; then
    ft_chain >"$LOGS/finetune.log" 2>&1 &
    ft_pid=$!
fi

stage sweep 60 cb sweep --all-behaviors --layers "$SWEEP_LAYERS" --mults "$SWEEP_MULTS" \
    --batch-size "$BS" --run effect-sweep "${common[@]}" --force
LAYER=${LAYER:-$("$PY" -c 'import json; d = json.load(open("results/effect-sweep/sweep.json")); print(d["best_layer"]["all"])' 2>/dev/null)}
LAYER=${LAYER:-12}
log "layer $LAYER"

stage eval-ab 60 cb eval --all-behaviors --layer "$LAYER" --mults "$MULTS" --tasks ab \
    --kinds baked,hooks --no-finetuned --batch-size "$BS" --run effect-ab "${common[@]}" --force
clean_exports
stage eval-capability 60 cb eval --all-behaviors --layer "$LAYER" --mults -1,0,1 \
    --tasks mmlu,truthfulqa --limit "$CAP_LIMIT" --kinds baked --no-finetuned \
    --batch-size "$BS" --run effect-capability "${common[@]}" --force
clean_exports

if [ -n "${ft_pid:-}" ]; then
    log "waiting for the finetuning chain"
    wait "$ft_pid"
    log "finetuning chain done"
    tail -n 20 "$LOGS/finetune.log" | cut -c1-300
    for b in $FT_BEHAVIORS; do
        stage "eval-ft-$b" 60 cb eval --behavior "$b" --layer "$LAYER" --mults -1,0,1 --tasks ab \
            --kinds baked --batch-size "$BS" --run "effect-ft-$b" "${common[@]}" --force
        clean_exports
    done
fi
log "done"
pack
