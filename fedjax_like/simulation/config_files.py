"""Reading a config file (TOML or JSON) into nested dicts, with errors that name the file.

TOML is read with the standard library's ``tomllib`` (Python 3.11+), else ``tomli`` (a dependency
on Python 3.10), else with :func:`parse_toml_subset`, a small reader of the part of TOML that
configs use (tables, ``key = value`` and dotted ``section.key = value`` with strings, integers,
floats, booleans and one-line arrays, comments). JSON is read with ``json``.

The configs shipped with the package live in ``fedjax_like/configs/`` (package data):
:func:`resolve_config_path` finds one by name (``'digits'``) when no such file exists.
"""

from __future__ import annotations

import ast
import json
import os
import re
from typing import Any


class ConfigError(ValueError):
  """A config is missing, malformed, or has an unknown key, a wrong type or a bad value."""


def _toml_module():
  try:
    import tomllib

    return tomllib
  except ImportError:  # Python 3.10
    try:
      import tomli

      return tomli
    except ImportError:
      return None


_KEY = r'[A-Za-z0-9_-]+'
_TABLE = re.compile(rf'^\[\s*({_KEY}(?:\s*\.\s*{_KEY})*)\s*\]$')
_PAIR = re.compile(rf'^({_KEY}(?:\s*\.\s*{_KEY})*)\s*=\s*(.+)$')


def _strip_comment(line: str) -> str:
  quote = None
  for i, char in enumerate(line):
    if quote:
      if char == quote and line[i - 1] != '\\':
        quote = None
    elif char in '"\'':
      quote = char
    elif char == '#':
      return line[:i]
  return line


def _toml_value(text: str, where: str) -> Any:
  text = text.strip()
  if text in ('true', 'false'):
    return text == 'true'
  if text.startswith('['):
    inner = text[1:-1].strip() if text.endswith(']') else None
    if inner is None:
      raise ConfigError(f'{where}: arrays must be on one line: {text!r}.')
    parts = [p for p in re.split(r',(?=(?:[^"\']*["\'][^"\']*["\'])*[^"\']*$)', inner) if p.strip()]
    return [_toml_value(p, where) for p in parts]
  if text.startswith(("'", '"')):
    if len(text) < 2 or text[-1] != text[0]:
      raise ConfigError(f'{where}: unterminated string {text!r}.')
    return text[1:-1] if text[0] == "'" else ast.literal_eval(text)
  number = text.replace('_', '')
  try:
    integer = r'[+-]?(?:0x[0-9a-fA-F]+|0o[0-7]+|0b[01]+|[0-9]+)'  # hex digits only after 0x
    return int(number, 0) if re.fullmatch(integer, number) else float(number)
  except ValueError:
    raise ConfigError(f'{where}: cannot read the value {text!r}.') from None


def parse_toml_subset(text: str, path: str = '<string>') -> dict[str, Any]:
  """Parses the TOML subset configs use; anything else raises ConfigError naming the line."""
  root: dict[str, Any] = {}
  table = root
  for number, raw in enumerate(text.splitlines(), start=1):
    line = _strip_comment(raw).strip()
    where = f'{path}, line {number}'
    if not line:
      continue
    match = _TABLE.match(line)
    if match:
      table = root
      for part in (p.strip() for p in match.group(1).split('.')):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
          raise ConfigError(f'{where}: [{match.group(1)}] redefines a value as a table.')
      continue
    match = _PAIR.match(line)
    if not match:
      raise ConfigError(f'{where}: expected "key = value" or "[table]", got {raw.strip()!r}.')
    *sections, key = (p.strip() for p in match.group(1).split('.'))
    node = table
    for part in sections:  # a dotted key: section.key = value
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ConfigError(f'{where}: {match.group(1)} redefines a value as a table.')
    if key in node:
      raise ConfigError(f'{where}: key {match.group(1)!r} is defined twice.')
    node[key] = _toml_value(match.group(2), where)
  return root


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
  """The file's contents as nested dicts (``.toml`` or ``.json``), or ConfigError naming it."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f'Config file {path} does not exist (expected a .toml or .json file).')
  extension = os.path.splitext(path)[1].lower()
  with open(path, 'rb') as f:
    raw = f.read()
  try:
    text = raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ConfigError(f'Config file {path} is not UTF-8 text: {e}.') from None
  if extension == '.json':
    try:
      return json.loads(text)
    except json.JSONDecodeError as e:
      raise ConfigError(f'Config file {path} is not valid JSON: {e}.') from None
  if extension == '.toml':
    toml = _toml_module()
    if toml is None:
      return parse_toml_subset(text, path)
    try:
      return toml.loads(text)
    except toml.TOMLDecodeError as e:
      raise ConfigError(f'Config file {path} is not valid TOML: {e}.') from None
  raise ConfigError(f'Config file {path}: expected a .toml or .json file, got {extension!r}.')


_PACKAGED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')


def packaged_configs() -> dict[str, str]:
  """``{name: path}`` of the configs shipped inside the package (``fedjax_like/configs/``)."""
  if not os.path.isdir(_PACKAGED):
    return {}
  names = sorted(n for n in os.listdir(_PACKAGED) if n.endswith(('.toml', '.json')))
  return {os.path.splitext(n)[0]: os.path.join(_PACKAGED, n) for n in names}


def resolve_config_path(path: str) -> str:
  """``path`` itself when it is a file, else the packaged config it names (``'digits'`` or
  ``'digits.toml'``); ConfigError lists the packaged names when neither exists."""
  if os.path.isfile(path):
    return path
  shipped = packaged_configs()
  name = os.path.splitext(path)[0] if path.endswith(('.toml', '.json')) else path
  if os.sep not in path and '/' not in path and name in shipped:
    return shipped[name]
  raise ConfigError(
      f'Config file {path} does not exist, and it is not the name of a packaged config (one of: '
      f'{", ".join(shipped) or "none installed"}). Pass a .toml or .json file or one of those '
      'names.'
  )
