#!/usr/bin/env bash
# Create one virtual environment per peer framework under benchmarks/peers/.venvs/.
#
#   bash benchmarks/peers/setup.sh            # all peers
#   bash benchmarks/peers/setup.sh pfl tff    # only some (pfl tff flower fedjax)
#   FORCE=1 bash benchmarks/peers/setup.sh    # rebuild even complete venvs
#
# Idempotent: a venv whose install finished and whose import check passed has a
# `.complete` marker and is skipped.  A peer that fails to install is reported
# and the script goes on with the others; the exit status is the number of
# peers that failed.  Install logs: benchmarks/peers/.work/setup_<peer>.log.
#
# torch: pip's global constraint file (/etc/xdg/pip/constraints.txt) caps
# torch, and the CPU wheel torch-2.13.0+cpu lies in the find-links folder
# (/opt/wheels); `torch==2.13.0` resolves to that local-version CPU wheel.  The
# import check below refuses a CUDA build.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="$HERE/.venvs"
WORK="$HERE/.work"
PY="${PYTHON:-python3}"
mkdir -p "$VENVS" "$WORK"

# ---- pins (exactly the recipes measured before) ----------------------------
PFL_PKGS=("pfl[pytorch]==0.6.0" "torch==2.13.0")

# TFF 0.87.0 pins jax/jaxlib 0.4.14, which the index does not serve: install
# TFF's own dependency list with jax/jaxlib 0.4.13 instead, then TFF --no-deps.
TFF_PKGS=(
  "tensorflow==2.14.*" "numpy~=1.25" "ml-dtypes==0.2.*" "dm-tree==0.1.8"
  "dp-accounting==0.4.3" "tensorflow-model-optimization==0.7.5"
  "tensorflow-privacy==0.9.0" "google-vizier==0.1.11" "scipy~=1.9.3"
  "jax==0.4.13" "jaxlib==0.4.13"
  "absl-py==1.*" "attrs~=23.1" "cachetools~=5.3" "grpcio~=1.46"
  "portpicker~=1.6" "tqdm~=4.64" "typing-extensions==4.5.*"
  "googleapis-common-protos==1.61.0"
  "tensorflow-probability==0.22.*" "scikit-learn<1.6"
)
TFF_NODEPS=("tensorflow-federated==0.87.0")

FLOWER_PKGS=("flwr[simulation]==1.42.0" "numpy" "torch==2.13.0")

FEDJAX_PKGS=("fedjax==0.0.17" "jax==0.4.13" "jaxlib==0.4.13" "dm-haiku==0.0.10"
  "numpy==1.26.4" "scipy==1.11.4" "ml_dtypes==0.2.0" "chex==0.1.82"
  "optax==0.1.7")

# ---- import checks (run in the venv after install) ---------------------------
CHECK_TORCH='import torch; assert torch.version.cuda is None, "CUDA torch build pulled: %s" % torch.__version__; print("torch", torch.__version__)'
CHECK_pfl="import pfl, numpy; $CHECK_TORCH; from pfl.model.pytorch import PyTorchModel; print('pfl ok')"
CHECK_tff="import tensorflow_federated as tff, jax, tensorflow as tf; print('tff', tff.__version__, 'tf', tf.__version__, 'jax', jax.__version__)"
CHECK_flower="import flwr, ray, numpy; $CHECK_TORCH; from flwr.simulation import run_simulation; print('flwr', flwr.__version__, 'ray', ray.__version__)"
CHECK_fedjax="import importlib.metadata as m, fedjax, jax, haiku; from fedjax.algorithms import fed_avg; print('fedjax', m.version('fedjax'), 'jax', jax.__version__)"

install_peer() {
  local peer="$1" venv="$VENVS/$1" log="$WORK/setup_$1.log"
  case "$peer" in pfl|tff|flower|fedjax) ;;
    *) echo "[$peer] unknown peer (pfl tff flower fedjax)"; return 1 ;; esac
  if [[ -f "$venv/.complete" && -z "${FORCE:-}" ]]; then
    echo "[$peer] already complete: $venv (FORCE=1 to rebuild)"
    return 0
  fi
  echo "[$peer] installing into $venv (log: $log)"
  rm -rf "$venv"
  (
    "$PY" -m venv "$venv" || exit 1
    pip=("$venv/bin/python" -m pip install --no-input --progress-bar off)
    case "$peer" in
      pfl)    "${pip[@]}" "${PFL_PKGS[@]}" || exit 1 ;;
      tff)    "${pip[@]}" "${TFF_PKGS[@]}" || exit 1
              "${pip[@]}" --no-deps "${TFF_NODEPS[@]}" || exit 1 ;;
      flower) "${pip[@]}" "${FLOWER_PKGS[@]}" || exit 1 ;;
      fedjax) "${pip[@]}" "${FEDJAX_PKGS[@]}" || exit 1 ;;
      *) echo "unknown peer $peer"; exit 2 ;;
    esac
    check="CHECK_$peer"
    timeout 600 "$venv/bin/python" -c "${!check}" || exit 1
    "$venv/bin/python" -m pip freeze > "$venv/pip-freeze.txt" || exit 1
    touch "$venv/.complete"
  ) >"$log" 2>&1 &
  local pid=$!
  if wait "$pid"; then
    echo "[$peer] OK: $(tail -n 1 "$log" 2>/dev/null)"
    return 0
  else
    echo "[$peer] FAILED (see $log); last lines:"
    tail -n 15 "$log" | sed "s/^/[$peer]   /"
    return 1
  fi
}

PEERS=("$@")
[[ ${#PEERS[@]} -eq 0 ]] && PEERS=(pfl tff flower fedjax)
failed=0
for p in "${PEERS[@]}"; do
  install_peer "$p" || failed=$((failed + 1))
done
echo "setup.sh: ${#PEERS[@]} peer(s), $failed failed"
exit "$failed"
