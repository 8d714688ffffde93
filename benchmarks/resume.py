"""Kill -9 a training run at several points, restart it, compare bitwise.

    python benchmarks/resume.py [--steps 120] [--kills 35,70,95] [--config ...]

Runs the CLI as real subprocesses: one unbroken run, and one run killed with
SIGKILL whenever it logs one of the `--kills` steps and restarted each time in
the same workdir. Writes benchmarks/results/resume.json (per-parameter
bitwise equality, max |difference|, the loss curves) and resume.png.
"""

import argparse
import json
import os
import pathlib
import signal
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position


def _env():
    env = dict(
        os.environ,
        JAX_PLATFORMS=os.environ.get('JAX_PLATFORMS', 'cpu'),
        TF_CPP_MIN_LOG_LEVEL='3',
    )
    return env


LOG_EVERY = 5  # The runs log (and can be killed) every this many steps.


def _cmd(args, workdir):
    return common.train_cmd(
        args.config,
        workdir,
        f'--config.num_train_steps={args.steps}',
        f'--config.checkpoint.every_steps={args.every}',
        f'--config.log_every_steps={LOG_EVERY}',
        '--config.eval.at_end=False',
    )


def _run_until(cmd, kill_step):
    """Runs `cmd`; SIGKILLs it once it logs `kill_step` (None: to the end)."""
    code, out = common.run_until_logged(cmd, kill_step, signal.SIGKILL, env=_env())
    if kill_step is None and code:
        raise SystemExit(''.join(out.splitlines(keepends=True)[-30:]))
    return code


def _params(workdir):
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import checkpoint  # pylint: disable=g-import-not-at-top

    step, path = checkpoint.latest_step_dir(str(pathlib.Path(workdir) / 'checkpoints'))
    leaves = jax.tree_util.tree_flatten_with_path(
        checkpoint.read_state(path)['params']
    )[0]
    return step, {jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves}


def _losses(workdir):
    with open(pathlib.Path(workdir) / 'metrics.jsonl', encoding='utf-8') as f:
        records = [json.loads(l) for l in f]
    return [(r['step'], r['train/loss']) for r in records if 'train/loss' in r]


def _plot(full, resumed, kills, path, identical):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*full), label='unbroken run', lw=3, alpha=0.5)
    ax.plot(*zip(*resumed), '--', label='killed and restarted', color='k')
    for k in kills:
        ax.axvline(k, color='r', lw=0.8, alpha=0.6)
    ax.set_xlabel('step')
    ax.set_ylabel('train loss')
    ax.set_title(f'SIGKILL (red lines), restart; params bitwise identical: {identical}')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/translate_synthetic.py:runlocal')
    parser.add_argument('--steps', type=int, default=120)
    parser.add_argument('--every', type=int, default=20)
    parser.add_argument('--kills', default='35,70,95')
    common.add_tag(parser)
    args = parser.parse_args()
    try:
        kills = [int(k) for k in args.kills.split(',')]
    except ValueError:
        parser.error(f'--kills {args.kills}: comma-separated step numbers.')
    # A step never logged is never killed at (the run would end unbroken and
    # still read as a resume that matched).
    bad = [k for k in kills if k % LOG_EVERY or not 0 < k < args.steps]
    if bad:
        parser.error(
            f'--kills {bad}: each must be a logged step (a multiple of '
            f'{LOG_EVERY}) below --steps {args.steps}.'
        )
    with tempfile.TemporaryDirectory() as tmp:
        full, broken = pathlib.Path(tmp, 'full'), pathlib.Path(tmp, 'broken')
        t0 = time.time()
        _run_until(_cmd(args, full), None)
        t_full = time.time() - t0
        codes = [_run_until(_cmd(args, broken), k) for k in kills]
        if any(code != -signal.SIGKILL for code in codes):
            raise SystemExit(
                f'a run was not killed as planned (exit codes {codes}; '
                f'{-signal.SIGKILL} is SIGKILL): no resume was tested.'
            )
        _run_until(_cmd(args, broken), None)
        step_a, a = _params(full)
        step_b, b = _params(broken)
        equal = {k: a[k].tobytes() == b[k].tobytes() for k in a}
        max_diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        curves = _losses(full), _losses(broken)
    _plot(
        *curves,
        kills,
        common.RESULTS / f'{common.stem("resume", args)}.png',
        all(equal.values()),
    )
    common.write_result(
        common.stem('resume', args),
        {
            'config': args.config,
            'steps': args.steps,
            'checkpoint_every': args.every,
            'killed_at_logged_steps': kills,
            'kill_exit_codes': codes,
            'final_step': [step_a, step_b],
            'num_param_arrays': len(a),
            'bitwise_identical': all(equal.values()),
            'arrays_identical': sum(equal.values()),
            'max_abs_difference': max_diff,
            'loss_curves_identical': curves[0] == curves[1],
            'unbroken_run_seconds': t_full,
            'plot': 'benchmarks/results/resume.png',
        },
    )
    print(
        f'bitwise identical: {all(equal.values())} '
        f'({sum(equal.values())}/{len(a)} arrays), max |diff| {max_diff}'
    )


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
