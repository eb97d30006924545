"""pyproject.toml: dependency floors are exactly the versions of the tested floor environment
(.ci/floors.txt, every package pinned), and the
files the package needs at run time (configs, the native kernels' source) are declared as data."""

import pathlib
import re

try:
  import tomllib
except ImportError:  # Python 3.10
  import tomli as tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Optional packages not part of the floors run (tested at their newest releases only):
# tensorflow-datasets and Pillow (the tfds reader), dp-accounting (privacy accounting) and
# jax-privacy (DP-FTRL, Python >= 3.11).
UNTESTED = ('tensorflow-datasets', 'pillow', 'dp-accounting', 'jax-privacy')


def _floors(requirements):
  floors = {}
  for requirement in requirements:
    name, floor = re.match(r'([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)', requirement).groups()
    if name.lower() not in UNTESTED:
      floors[name.lower()] = floor
  return floors


def test_dependency_floors_are_the_tested_pins():
  project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
  pins = {}
  for line in (ROOT / '.ci' / 'floors.txt').read_text().splitlines():
    if line.strip() and not line.startswith('#'):
      name, version = line.split('==')
      pins[name.strip().lower()] = version.strip()
  declared = _floors(project['dependencies'])
  for requirements in project['optional-dependencies'].values():
    declared.update(_floors(requirements))
  assert declared == {name: pins.get(name) for name in declared}
  assert 'tomli>=2.0.1; python_version < "3.11"' in project['dependencies']


def test_run_time_files_are_package_data():
  config = tomllib.loads((ROOT / 'pyproject.toml').read_text())['tool']['setuptools']
  data = config['package-data']
  assert 'configs/*.toml' in data['fedjax_like']
  assert {'*.c', '*.h'} <= set(data['fedjax_like.core.engine'])
  assert list((ROOT / 'fedjax_like' / 'configs').glob('*.toml'))
  engine = ROOT / 'fedjax_like' / 'core' / 'engine'
  assert {'_conv2d.c', '_dense.c', '_native.h'} <= {p.name for p in engine.iterdir()}
