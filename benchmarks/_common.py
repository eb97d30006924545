"""What the markdown reports of the benchmarks share: the environment lines and the section
written into a results file."""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import sys

import flax
import jax
import numpy as np
import optax

import fedjax_like as fl


def environment(command: str) -> str:
  """Markdown bullets: the date, ``command``, the machine and JAX device, the versions."""
  device = jax.devices()[0]
  return '\n'.join(
    [
      f'- date: {datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}',
      f'- command: `{command}`',
      f'- machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPU cores; '
      f'JAX device: {device.platform} ({device.device_kind})',
      f'- versions: Python {platform.python_version()}, jax {jax.__version__}, '
      f'flax {flax.__version__}, optax {optax.__version__}, numpy {np.__version__}, '
      f'fedjax_like {fl.__version__}',
    ]
  )


def write_section(path: pathlib.Path, marker: str, report: str) -> None:
  """Writes ``report`` into ``path`` in place of the section that starts with ``marker`` (up to
  the next ``## `` heading), or appends it when there is none."""
  text = path.read_text()
  if marker in text:
    head, _, rest = text.partition(marker)
    tail = rest[rest.find('\n## ') + 1 :] if '\n## ' in rest else ''
    text = head + report + ('\n' + tail if tail else '')
  else:
    text = text.rstrip('\n') + '\n\n' + report
  path.write_text(text)
  print(f'wrote {path}', file=sys.stderr)
