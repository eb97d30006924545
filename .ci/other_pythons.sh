#!/usr/bin/env bash
# Installs the package's built wheel into a fresh venv on every other supported Python found on
# this machine, and runs in each the TFF quickstart (examples/quickstart.py) and one round of the
# CLI with the CNN (so the native convolution kernels are built and used). A Python that is not
# installed is skipped, saying so. Run by .ci/run after `make test`; about 3-5 minutes a Python
# (mostly pip; a cold cache downloads about 400 MB each).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build_python=${BUILD_PYTHON:-.venv/bin/python}
versions=${PYTHON_VERSIONS:-3.10 3.12 3.13}  # 3.11 is the one `make test` runs on

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

find_python() {  # the interpreter of Python $1: on PATH, or a pyenv installation
  local candidate
  for candidate in "python$1" "$HOME"/.pyenv/versions/"$1".*/bin/"python$1"; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      [ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$1" ]; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

quietly() {  # runs a command with its output in a log, shown only if it fails
  local log="$work/step.log"
  "$@" >"$log" 2>&1 || { echo "failed: $*"; tail -30 "$log"; return 1; }
}

quietly "$build_python" -m pip wheel -q --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/fedjax_like-*.whl)
"$build_python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = ['fedjax_like/configs/digits.toml'] + [
    f'fedjax_like/core/engine/{name}' for name in ('_conv2d.c', '_dense.c', '_native.h')]
missing = [name for name in needed if name not in names]
sys.exit(f'the wheel lacks {missing}' if missing else 0)
PY
echo "Built $(basename "$wheel") (configs and kernel source included)."

status=0
for version in $versions; do
  if ! python=$(find_python "$version"); then
    echo "Python $version: not installed on this machine, skipped."
    continue
  fi
  started=$SECONDS
  venv="$work/venv-$version"
  run="$work/run-$version"
  mkdir -p "$run"
  quietly "$python" -m venv "$venv"
  quietly "$venv/bin/python" -m pip install -q --upgrade pip
  if ! quietly "$venv/bin/python" -m pip install -q "$wheel[digits,sim]"; then
    echo "Python $version: the wheel did not install."
    status=1
    continue
  fi
  jax_version=$("$venv/bin/python" -c 'import jax; print(jax.__version__)')
  export JAX_PLATFORMS=cpu FEDJAX_LIKE_CACHE_DIR="$run/cache"
  # From a directory outside the checkout, so the installed wheel is what runs.
  (cd "$run" && "$venv/bin/python" "$root/examples/quickstart.py") >"$run/quickstart.log" 2>&1 ||
    { echo "Python $version: the quickstart failed:"; tail -20 "$run/quickstart.log"; status=1; continue; }
  (cd "$run" && "$venv/bin/fedjax-like" train --config digits --model.name cnn \
    --training.num_rounds 1 --training.clients_per_round 2 --training.client_epochs 1 \
    --evaluation.every 0 --output.root "$run/runs" --output.progress log) >"$run/cli.log" 2>&1 ||
    { echo "Python $version: the CLI round failed:"; tail -20 "$run/cli.log"; status=1; continue; }
  if grep -q 'native CPU kernels unavailable' "$run/cli.log" ||
    ! ls "$run"/cache/fjl_native-*.so >/dev/null 2>&1; then
    echo "Python $version: the native kernels were not built:"; grep -A3 native "$run/cli.log"
    status=1
    continue
  fi
  accuracies=$(grep -cE '^[0-9.]+$' "$run/quickstart.log" || true)
  if [ "$accuracies" != 5 ] || ! grep -q "Run 'digits_fedavg': 1 rounds" "$run/cli.log"; then
    echo "Python $version: unexpected output:"; cat "$run/quickstart.log" "$run/cli.log"
    status=1
    continue
  fi
  echo "Python $version (jax $jax_version): wheel installed, quickstart and a CNN round with" \
    "native kernels ran ($((SECONDS - started)) s)."
done
exit $status
