#!/usr/bin/env bash
# Cross-checks config_to_yaml against an independent YAML reader (PyYAML):
# for every shipped config, the canonical text printed by build/tools/config_dump
# must parse under PyYAML to the same values as the shipped file itself, and keys
# the file leaves out must hold the defaults documented in common/config/config.h.
# Also checks that an override reaches the output and a bad one exits 1.
set -u
DUMP=build/tools/config_dump
TMP="${DDPM_TEST_TMP:-$(mktemp -d)}"
if [ ! -x "$DUMP" ]; then echo "not ok - $DUMP not built (make test-build)"; exit 1; fi
if ! /usr/bin/python3 -c 'import yaml' 2>/dev/null; then echo "not ok - PyYAML missing"; exit 1; fi

for f in configs/*.yaml; do
    out="$TMP/dump-$(basename "$f")"
    if ! "$DUMP" "$f" >"$out" 2>"$out.err"; then
        echo "not ok - config_dump $f: $(cat "$out.err")"; continue
    fi
    /usr/bin/python3 - "$f" "$out" <<'PY'
import sys, yaml
src, dumped = sys.argv[1], sys.argv[2]
a = yaml.safe_load(open(src))
b = yaml.safe_load(open(dumped))
# Defaults from config.h's comments, for keys a file may leave out.
defaults = {
    "model": {"attn_resolutions": [], "dropout": 0.0, "resamp_with_conv": True, "num_classes": 0,
              "learn_sigma": False},
    "diffusion": {"schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                  "sampling_variance": "beta"},
    "training": {"seed": 0, "micro_batch": 0, "warmup_steps": 0, "grad_clip": 1.0,
                 "ema_decay": 0.9999, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_eps": 1e-8,
                 "timestep_sampler": "uniform", "log_every": 10, "checkpoint_every": 1000,
                 "keep_checkpoints": 3, "threads": 0, "eval_every": 0, "eval_images": 64,
                 "eval_stride": 50, "label_dropout": 0.0, "sample_every": 0,
                 "sample_images": 16, "sample_weights": "ema", "precision": "fp32"},
    "data": {"eval_path": "", "random_flip": False, "labels_path": ""},
    "distributed": {"servers": 1, "codec": "fp32", "zstd_level": 1, "timeout_s": 60.0},
    "output": {"tensorboard": True},
}
bad = []
for sec, keys in b.items():
    for k, v in keys.items():
        if sec in a and k in a[sec]:
            want = a[sec][k]
        elif k in defaults.get(sec, {}):
            want = defaults[sec][k]
        else:
            bad.append(f"{sec}.{k}: in output but neither in the file nor a default")
            continue
        if want != v or type(want) is bool and type(v) is not bool:
            bad.append(f"{sec}.{k}: file/default {want!r}, canonical output {v!r}")
for sec, keys in a.items():
    for k in keys:
        if k not in b.get(sec, {}):
            bad.append(f"{sec}.{k}: missing from the canonical output")
n = sum(len(v) for v in b.values())
if bad:
    print(f"not ok - {src}: PyYAML reads the canonical text differently: " + "; ".join(bad))
else:
    print(f"ok - {src}: PyYAML reads all {n} canonical keys as in the file or the defaults")
PY
done

out="$TMP/dump-override"
if "$DUMP" configs/tiny.yaml training.steps=7 'model.ch_mult=[1, 2]' >"$out" 2>&1 &&
   /usr/bin/python3 -c 'import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); sys.exit(not (d["training"]["steps"]==7))' "$out"; then
    echo "ok - override training.steps=7 reaches the canonical output"
else
    echo "not ok - override training.steps=7: $(cat "$out")"
fi
if "$DUMP" configs/tiny.yaml training.stepz=7 >"$out" 2>&1; then
    echo "not ok - unknown override key accepted"
elif grep -q "<command line>: training.stepz: unknown key" "$out"; then
    echo "ok - unknown override key: exit 1 with '$(cat "$out")'"
else
    echo "not ok - unknown override key: unexpected message '$(cat "$out")'"
fi
