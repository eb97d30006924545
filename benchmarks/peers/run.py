#!/usr/bin/env python3
"""Run every installed peer on both models, one after another, and tabulate.

    python3 benchmarks/peers/run.py                       # all installed peers
    python3 benchmarks/peers/run.py --peers pfl,fedjax --models cnn
    python3 benchmarks/peers/run.py --ours '.venv/bin/python -m benchmarks.fedavg_peer_workload'

Needs only a python3 with NumPy (for workload.py's data file).  Each peer runs
as a subprocess with its own venv python (benchmarks/peers/.venvs/<peer>),
in its own session, with a timeout; its stdout/stderr go to files under
.work/runs/<stamp>/ (TFF's worker_binary inherits the peer's output, so pipes
could never close), and any process still left in that session afterwards
(TFF's worker_binary, Ray workers) is ended by pid.

`--ours CMD` adds fedjax_like: CMD must print the same ONE JSON line as the
peer scripts (keys peer, model, sec_per_round_median, sec_per_round_all,
timer_includes, versions).  It runs through `bash -c` from the repository
root; `{model}`, `{rounds}`, `{warmup}` in CMD are substituted, and if CMD has
no `{model}` then ` --model M --rounds N --warmup K` is appended.  The table
then gets ratio columns peer_time / ours (> 1: ours is faster), all measured
in the same run.

The table goes to stdout and to benchmarks/peers/.work/RESULTS_peers.md (with the
machine description and each peer's versions; untracked, so a run leaves the
checkout clean; --output benchmarks/peers/RESULTS_peers.md updates the committed
record); raw JSON lines to .work/runs/<stamp>/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import workload as W  # noqa: E402

PEERS = ('pfl', 'tff', 'flower', 'fedjax')
PEER_NAMES = {
  'pfl': 'pfl-research 0.6 (PyTorch)',
  'tff': 'TensorFlow Federated 0.87',
  'flower': 'Flower 1.42 + Ray',
  'fedjax': 'FedJAX 0.0.17',
  'ours': 'fedjax_like (ours)',
}
ENV = {
  'JAX_PLATFORMS': 'cpu',
  'TF_CPP_MIN_LOG_LEVEL': '2',
  'FLWR_TELEMETRY_ENABLED': '0',
  'RAY_USAGE_STATS_ENABLED': '0',
  'CUDA_VISIBLE_DEVICES': '',
}


def venv_python(peer):
  return os.path.join(HERE, '.venvs', peer, 'bin', 'python')


def installed(peer):
  return os.path.exists(os.path.join(HERE, '.venvs', peer, '.complete'))


def _session_members(sid):
  """pids of processes whose session id is `sid` (the ones a run started)."""
  pids = []
  for d in os.listdir('/proc'):
    if not d.isdigit():
      continue
    try:
      with open(f'/proc/{d}/stat') as f:
        stat = f.read()
      fields = stat[stat.rindex(')') + 2 :].split()
    except (OSError, ValueError):
      continue
    if int(fields[3]) == sid and fields[0] != 'Z':
      pids.append(int(d))
  return pids


def _end_session(sid):
  """Ends, by pid, what is left of the session a peer run started."""
  left = _session_members(sid)
  for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in left:
      try:
        os.kill(pid, sig)
      except ProcessLookupError:
        pass
    deadline = time.time() + 5
    while time.time() < deadline:
      left = _session_members(sid)
      if not left:
        break
      time.sleep(0.1)
    if not left:
      break
  return left


def run_one(label, argv, outdir, timeout):
  """Runs one benchmark command; returns (result dict or None, error str)."""
  out_path = os.path.join(outdir, f'{label}.out')
  err_path = os.path.join(outdir, f'{label}.err')
  env = dict(os.environ, **ENV)
  t0 = time.time()
  with open(out_path, 'w') as out, open(err_path, 'w') as err:
    proc = subprocess.Popen(
      argv,
      stdout=out,
      stderr=err,
      stdin=subprocess.DEVNULL,
      cwd=REPO,
      env=env,
      start_new_session=True,
    )
    try:
      rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      rc = None
    leftovers = _session_members(proc.pid)
    if rc is None:
      os.kill(proc.pid, signal.SIGKILL)
      proc.wait()
    stuck = _end_session(proc.pid)
  wall = time.time() - t0
  note = ''
  if leftovers:
    note = f' (ended {len(leftovers)} leftover process(es) of the run by pid)'
  if stuck:
    note += f' (could not end pids {stuck})'
  with open(out_path) as f:
    lines = [ln for ln in f.read().splitlines() if ln.strip().startswith('{')]
  result = None
  if lines:
    try:
      result = json.loads(lines[-1])
    except json.JSONDecodeError:
      result = None
  if rc is None:
    return result, f'timed out after {timeout}s{note}'
  if result is None or rc != 0:
    with open(err_path) as f:
      tail = f.read().splitlines()[-8:]
    msg = f'rc={rc}, no/failed JSON result{note}; stderr tail: ' + ' | '.join(tail)
    return result, msg
  sys.stderr.write(
    f'  {label}: {result["sec_per_round_median"]:.4f} s/round ({wall:.0f}s wall){note}\n'
  )
  return result, ''


def cpu_model():
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def mem_total():
  try:
    with open('/proc/meminfo') as f:
      kb = int(f.readline().split()[1])
    return f'{kb / 2**20:.0f} GiB'
  except (OSError, ValueError, IndexError):
    return 'unknown'


def fmt(x, digits=3):
  if x is None:
    return '—'
  return f'{x:.{digits}f}' if x >= 0.01 else f'{x:.4f}'


def main():
  ap = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  ap.add_argument(
    '--peers', default=','.join(PEERS), help='comma list of peers (default: every installed one)'
  )
  ap.add_argument('--models', default=','.join(W.MODELS))
  ap.add_argument('--rounds', type=int, default=10, help='timed rounds per run (>= 5)')
  ap.add_argument('--warmup', type=int, default=3, help='warm-up rounds per run (>= 2)')
  ap.add_argument('--timeout', type=int, default=900, help='seconds per peer run')
  ap.add_argument(
    '--repeats',
    type=int,
    default=1,
    help='run the whole sweep this many times, interleaved (peer A, '
    'B, ..., A, B, ...), to damp load from other work',
  )
  ap.add_argument(
    '--stat',
    choices=('best', 'median'),
    default='best',
    help='with --repeats > 1, what the main table shows per peer: '
    'the best (lowest) per-run median [default], or the '
    'median of the per-run medians (both are written)',
  )
  ap.add_argument('--ours', default=None, help="command printing fedjax_like's JSON line")
  ap.add_argument(
    '--output',
    default=os.path.join(HERE, '.work', 'RESULTS_peers.md'),
    help='where the report goes (default .work/RESULTS_peers.md, untracked; pass '
    'benchmarks/peers/RESULTS_peers.md to update the committed record)',
  )
  args = ap.parse_args()
  if args.rounds < 5 or args.warmup < 2:
    ap.error('the metric needs --rounds >= 5 and --warmup >= 2')

  W.ensure_data()
  stamp = time.strftime('%Y%m%d-%H%M%S')
  outdir = os.path.join(HERE, '.work', 'runs', stamp)
  os.makedirs(outdir, exist_ok=True)

  peers = [p for p in args.peers.split(',') if p]
  models = [m for m in args.models.split(',') if m]
  runners = []  # (peer, argv builder)
  skipped = {}
  for p in peers:
    if p not in PEERS:
      ap.error(f'unknown peer {p}')
    if installed(p):
      runners.append(p)
    else:
      skipped[p] = f'not installed (run setup.sh; no .venvs/{p}/.complete)'
  if args.ours:
    runners.append('ours')

  def argv_for(peer, model):
    if peer == 'ours':
      cmd = args.ours
      fmtargs = dict(model=model, rounds=args.rounds, warmup=args.warmup)
      if '{model}' in cmd:
        cmd = cmd.format(**fmtargs)
      else:
        cmd += f' --model {model} --rounds {args.rounds} --warmup {args.warmup}'
      return ['bash', '-c', cmd]
    return [
      venv_python(peer),
      os.path.join(HERE, f'peer_{peer}.py'),
      '--model',
      model,
      '--rounds',
      str(args.rounds),
      '--warmup',
      str(args.warmup),
    ]

  load_before = os.getloadavg()
  runs, errors = {}, {}  # (peer, model) -> [result per repeat]
  jsonl = open(os.path.join(outdir, 'results.jsonl'), 'w')
  for rep in range(args.repeats):
    for model in models:
      for peer in runners:
        label = f'{peer}_{model}' + (f'_r{rep}' if args.repeats > 1 else '')
        sys.stderr.write(f'[{time.strftime("%H:%M:%S")}] {label} ...\n')
        res, err = run_one(label, argv_for(peer, model), outdir, args.timeout)
        if res is not None:
          res['loadavg_after'] = round(os.getloadavg()[0], 2)
          runs.setdefault((peer, model), []).append(res)
          jsonl.write(json.dumps(dict(res, repeat=rep)) + '\n')
          jsonl.flush()
        if err:
          errors[(peer, model, rep)] = err
          sys.stderr.write(f'  {label}: FAILED: {err}\n')
  jsonl.close()
  # One summary result per (peer, model): the last run's dict, with the
  # median of the per-run medians and the worst correctness outcome.
  results = {}
  for key, lst in runs.items():
    r = dict(lst[-1])
    r['run_medians'] = [x['sec_per_round_median'] for x in lst]
    r['best_run_median'] = min(r['run_medians'])
    r['median_of_run_medians'] = statistics.median(r['run_medians'])
    r['ok'] = all(x.get('ok', True) for x in lst)
    r['problems'] = sorted({pr for x in lst for pr in x.get('problems', [])})
    results[key] = r
  load_after = os.getloadavg()

  # ---- tables ------------------------------------------------------------
  def make_table(stat):
    val = {k: r[stat] for k, r in results.items()}
    ours = {m: val.get(('ours', m)) for m in models}
    head = ['peer'] + [f'{m} s/round' for m in models]
    if args.ours:
      head += [f'{m} peer/ours' for m in models]
    head += [f'{m} train acc' for m in models]
    rows = []
    for peer in runners:
      row = [PEER_NAMES.get(peer, peer)]
      for m in models:
        cell = fmt(val.get((peer, m)))
        nfail = sum(1 for k in errors if k[:2] == (peer, m))
        if nfail:
          cell += f' ({nfail} run(s) failed)'
        row.append(cell)
      if args.ours:
        for m in models:
          v = val.get((peer, m))
          row.append(f'{v / ours[m]:.2f}x' if v and ours[m] else '—')
      for m in models:
        r = results.get((peer, m))
        row.append(
          '—'
          if not r or r.get('final_train_accuracy') is None
          else f'{r["final_train_accuracy"]:.3f}' + ('' if r.get('ok', True) else ' (check failed)')
        )
      rows.append(row)
    t = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---' for _ in head) + '|']
    t += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(t)

  primary = 'best_run_median' if args.stat == 'best' else 'median_of_run_medians'
  table_md = make_table(primary)
  other_md = make_table('median_of_run_medians' if args.stat == 'best' else 'best_run_median')
  print(table_md)

  # ---- RESULTS_peers.md ------------------------------------------------------
  md = [f'# FedAvg peer benchmark — results ({time.strftime("%Y-%m-%d %H:%M %Z")})', '']
  md += [
    'Generated by `python3 benchmarks/peers/run.py '
    + ' '.join(shlex.quote(a) for a in sys.argv[1:])
    + '`.',
    '',
  ]
  md += [
    '## Machine',
    '',
    f'- CPU: {cpu_model()}; {os.cpu_count()} logical cores visible; '
    f'memory {mem_total()}; no GPU (all peers forced to CPU)',
    f'- OS: {platform.platform()}; driver python {platform.python_version()}',
    f'- load average (1/5/15 min) before: '
    f'{" / ".join(f"{x:.2f}" for x in load_before)}, after: '
    f'{" / ".join(f"{x:.2f}" for x in load_after)} '
    '(other work shares this machine: compare only numbers from the same run)',
    '',
  ]
  md += [
    '## Workload',
    '',
    f'{W.NUM_CLIENTS} clients x {W.EXAMPLES_PER_CLIENT} examples of synthetic '
    f'EMNIST-shaped data (28x28x1 float32, labels in [0,{W.NUM_CLASSES}), seed '
    f'{W.SEED}, one shared .npz), batch {W.BATCH_SIZE}, {W.LOCAL_EPOCHS} local '
    f'epoch, client SGD lr {W.CLIENT_LR}, server SGD lr {W.SERVER_LR} (plain '
    'FedAvg, example-weighted), all 10 clients every round. CNN = conv3x3 32 '
    '-> conv3x3 64 -> maxpool 2 -> dense 128 -> dense 62; linear = 784 -> 62. '
    f'Metric: median s/round over {args.rounds} timed rounds after '
    f'{args.warmup} warm-up rounds, each peer in its own venv, run one after '
    'another'
    + (
      f'; the sweep was repeated {args.repeats} times, interleaved (each run is a fresh process)'
      if args.repeats > 1
      else ''
    )
    + '.',
    '',
  ]
  stat_words = {
    'best_run_median': 'the lowest per-run median (the least disturbed of the repeated runs)',
    'median_of_run_medians': 'the median of the per-run medians',
  }
  md += ['## Seconds per round', '']
  if args.repeats > 1:
    md += [f'Each cell is {stat_words[primary]} over {args.repeats} runs.', '']
  md += [table_md, '']
  if args.repeats > 1:
    other = 'median_of_run_medians' if primary == 'best_run_median' else 'best_run_median'
    md += [f'Same runs, {stat_words[other]}:', '', other_md, '']
  if args.ours:
    md += [
      '`peer/ours` = peer median / fedjax_like median for the same model '
      'in this run (> 1 means fedjax_like is faster).',
      '',
    ]
  if skipped or errors:
    md += ['## Not measured', '']
    md += [f'- {PEER_NAMES[p]}: {why}' for p, why in skipped.items()]
    md += [f'- {PEER_NAMES.get(p, p)} / {m} (run {r}): {e}' for (p, m, r), e in errors.items()]
    md += ['']
  md += [
    '## All timed rounds (s)',
    '',
    '`load` = 1-minute load average right after the run (2 cores).',
    '',
    '| peer | model | run | load | median | rounds |',
    '|---|---|---|---|---|---|',
  ]
  for (peer, m), lst in runs.items():
    for i, r in enumerate(lst):
      md.append(
        f'| {peer} | {m} | {i} | {r.get("loadavg_after", "?")} | '
        f'{fmt(r["sec_per_round_median"], 4)} | '
        + ', '.join(f'{t:.4f}' for t in r['sec_per_round_all'])
        + ' |'
      )
  md += ['', '## Versions', '']
  seen = set()
  for (peer, _m), r in results.items():
    if peer in seen:
      continue
    seen.add(peer)
    v = ', '.join(f'{k} {val}' for k, val in r.get('versions', {}).items())
    md.append(f'- {PEER_NAMES.get(peer, peer)}: {v}')
  md += ['', '## What each timer includes', '']
  seen = set()
  for (peer, _m), r in results.items():
    if peer in seen:
      continue
    seen.add(peer)
    md.append(f'- **{PEER_NAMES.get(peer, peer)}**: {r.get("timer_includes", "?")}')
  md += [
    '',
    '## Correctness (training data, after all rounds)',
    '',
    '| peer | model | initial loss | final loss | final accuracy | check |',
    '|---|---|---|---|---|---|',
  ]
  for (peer, m), r in results.items():
    md.append(
      f'| {peer} | {m} | {fmt(r.get("initial_train_loss"))} | '
      f'{fmt(r.get("final_train_loss"))} | '
      f'{fmt(r.get("final_train_accuracy"))} | '
      + ('ok' if r.get('ok', True) else '; '.join(r.get('problems', [])))
      + ' |'
    )
  md += ['', f'Raw output: `benchmarks/peers/.work/runs/{stamp}/` (git-ignored).', '']
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, 'w') as f:
    f.write('\n'.join(md))
  sys.stderr.write(f'wrote {args.output}\n')
  return 1 if errors else 0


if __name__ == '__main__':
  sys.exit(main())
