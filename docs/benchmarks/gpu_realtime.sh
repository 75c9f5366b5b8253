#!/usr/bin/env bash
# Real time end to end (issue 15), one command on a GPU: streams Wan2.2-TI2V-5B (random weights) at 1280x704 bf16
# through the session loop and writes one JSON with backbone FPS, end-to-end FPS with the full Wan2.2 VAE and with
# the tiny TAEHV decoder, first-chunk latency, ops/kernels and host syncs per chunk, the clean-pass-skip difference,
# and the fast configuration (device noise + overlapped decode + clean pass skipped [+ compiled blocks]).
#
#   bash docs/benchmarks/gpu_realtime.sh [OUT.json]          # a few minutes on one H100/H200
#   TAEHV=/path/taew2_2.safetensors bash docs/benchmarks/gpu_realtime.sh   # real tiny-decoder weights (same cost)
#   COMPILE=1 ...                                            # add torch.compile of the blocks to the fast run
#   DRY=1 bash docs/benchmarks/gpu_realtime.sh /tmp/dry.json # the same logic on CPU at tiny size (seconds)
#   PROFILE=longlive2 bash docs/benchmarks/gpu_realtime.sh ll2.json  # a public student's loop at its native size
#                                                            # (longlive2 / longlive1 / self_forcing / causvid; random
#                                                            # weights of its architecture; docs/profiles.md)
#
# Run from the repository root with the project's Python environment active.
set -euo pipefail

OUT="${1:-gpu_realtime.json}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
DECODER="taehv${TAEHV:+:$TAEHV}"
PROFILE="${PROFILE:-}"
FAMILY=wan2.2
if [[ "$PROFILE" == longlive1 || "$PROFILE" == self_forcing || "$PROFILE" == causvid ]]; then FAMILY=wan2.1; fi

if [[ "${DRY:-0}" == "1" ]]; then
  TINY=tiny; if [[ "$FAMILY" == wan2.1 ]]; then TINY=tiny-wan2.1; fi
  COMMON=(--preset "$TINY" --height 64 --width 64 --device cpu --dtype fp32 --vae "$FAMILY-tiny" --latent-frames 24
          --recompute-at 1)
elif [[ -n "$PROFILE" ]]; then
  # The profile's architecture at its native size (LongLive 2.0: Wan2.2-TI2V-5B at 1280x704; the others
  # Wan2.1-T2V-1.3B at 832x480) and its own loop.
  COMMON=(--device cuda --dtype bf16 --vae "$FAMILY" --latent-frames 129 --recompute-at 5 10)
else
  # 129 latent frames = 43 chunks: enough for the chunk-40 / chunk-5 flatness ratio.
  COMMON=(--preset wan2.2-ti2v-5b --height 1280 --width 704 --device cuda --dtype bf16 --vae wan2.2
          --latent-frames 129 --recompute-at 5 10 20)
fi
if [[ -n "$PROFILE" ]]; then COMMON+=(--profile "$PROFILE"); fi

# 1. The reference configuration: CPU noise, clean pass, serial decode; full VAE in the session, the tiny decoder on
#    the same latents afterwards; 6 chunks with the clean pass skipped against exact.
python -m chameleon_core.tools.bench "${COMMON[@]}" --decoder "$DECODER" --clean-pass-check 6 \
  --json "$TMP/exact.json" > "$TMP/exact.log"

# 2. The fast configuration: device noise, decode overlapped with the next chunk, no clean pass (+ compile).
FAST=(--noise device --overlap-decode --skip-clean-pass)
if [[ "${COMPILE:-0}" == "1" ]]; then FAST+=(--compile); fi
python -m chameleon_core.tools.bench "${COMMON[@]}" --decoder "$DECODER" "${FAST[@]}" --recompute-at \
  --json "$TMP/fast.json" > "$TMP/fast.log"

python - "$TMP/exact.json" "$TMP/fast.json" "$OUT" <<'EOF'
import json, sys
exact, fast = (json.load(open(p)) for p in sys.argv[1:3])
keys = ("backbone_fps", "end_to_end_fps", "end_to_end_fps_tiny_decoder", "session_fps_wall", "first_chunk_latency_s",
        "per_chunk", "chunk40_over_chunk5", "last10_over_first10_after_warmup", "cache_mb", "memory")
summary = {
    "machine": exact["machine"],
    "profile": exact["config"]["profile"],
    "published": exact.get("published_speed") or ("FashionChameleon paper: 23.8 FPS backbone (H200)"
                  if exact["config"]["profile"] == "fashionchameleon" else "none stated in the project's README"),
    "paper_backbone_fps": 23.8 if exact["config"]["profile"] == "fashionchameleon" else None,
    "exact": {k: exact.get(k) for k in keys},
    "fast": {k: fast.get(k) for k in keys},
    "clean_pass_check": exact["clean_pass_check"],
    "recompute_vs_cached": exact["recompute_vs_cached"],
    "runs": {"exact": exact, "fast": fast},
}
json.dump(summary, open(sys.argv[3], "w"), indent=2)
print(json.dumps({k: summary[k] for k in ("machine", "profile", "published", "exact", "fast")}, indent=2)[:4000])
EOF
echo "wrote $OUT"
