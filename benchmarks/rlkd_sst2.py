"""Reinforced multi-teacher distillation on SST-2 against its baselines.

    python benchmarks/rlkd_sst2.py                    # CPU scale, 3 seeds
    python benchmarks/rlkd_sst2.py --seeds 2          # fewer seeds
    python benchmarks/rlkd_sst2.py --scale cpu_long   # stronger (longer-trained) teachers
    python benchmarks/rlkd_sst2.py --scale gpu        # longer runs, bigger teachers
    python benchmarks/rlkd_sst2.py --scale quick      # smoke test, minutes

1. Trains three teachers of different character (Transformer encoder, CNN,
   BiLSTM) with `python -m jaxdistill.train --config configs/rlkd_sst2.py:arm=...`
   (skipped when WORKDIR/teachers/NAME already holds a finished run), frozen.
2. For each seed, trains the bag-of-embeddings student in-process through the
   same library entry point (`trainer.train_and_evaluate`) in six arms: alone;
   KD from each single teacher; equal-weight KD from all three; RL-weighted.
   Every arm sees the same batches (same seed). Checkpoints are chosen on
   dev.tsv (held-out training phrases), accuracy reported on glue_dev.tsv.
3. Measures the policy's overhead per step by timing the compiled steps of
   the three phases on one batch ('equal' = equal-weight KD, 'act', 'learn').
4. Plots the learned teachers' selection probability against the teacher's
   confidence (its probability of the gold label), and the per-teacher weights
   over training.
Writes benchmarks/results/rlkd_sst2[_SCALE].json and .png.
"""

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

CONFIG = str(common.REPO / 'configs' / 'rlkd_sst2.py')
TEACHERS = ('teacher_transformer', 'teacher_cnn', 'teacher_bilstm')
SCALES = {
    # The config's own sizes (2 busy CPU cores): teachers 0.6 epoch.
    'cpu': {'teacher': [], 'student': []},
    # Stronger teachers (CNN and BiLSTM 3 epochs, Transformer 1.3: it is the
    # slowest here); the same students.
    'cpu_long': {
        'teacher': ['num_train_steps=2800'],
        'transformer_teacher': ['num_train_steps=1200'],
        'student': [],
    },
    'quick': {
        'teacher': ['num_train_steps=200', 'data.max_train_examples=8000'],
        'student': [
            'num_train_steps=400',
            'data.max_train_examples=8000',
            'eval.every_steps=100',
            'checkpoint.every_steps=100',
            'method.warmup_steps=100',
            'method.pretrain_steps=50',
        ],
    },
    'gpu': {
        'teacher': [
            'num_train_steps=6000',
            'model.embed_dim=256',
            'model.d_model=256',
            'model.hidden_size=256',
        ],
        'student': [
            'num_train_steps=9000',
            'method.warmup_steps=1500',
            'method.pretrain_steps=1000',
        ],
    },
}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--scale', choices=sorted(SCALES), default='cpu')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--workdir', default='/tmp/jaxdistill_bench_rlkd')
    p.add_argument('--data_dir', default=str(common.REPO.parent / 'shared/data/sst2'))
    p.add_argument('--note', default='', help='free text stored in the JSON')
    return p.parse_args()


def _valid(overrides, config_arg):
    """Drops overrides whose key the config lacks (e.g. d_model on a CNN)."""
    from jaxdistill import configuration  # pylint: disable=g-import-not-at-top

    config = configuration.load_config(f'{CONFIG}:{config_arg}')
    keep = []
    for o in overrides:
        node = config
        *parents, leaf = o.split('=')[0].split('.')
        for part in parents:
            node = node.get(part, {}) if hasattr(node, 'get') else {}
        if hasattr(node, 'get') and leaf in node:
            keep.append(o)
    return keep


def train_teachers(args, workdir):
    """Trains each teacher with the CLI unless already done; returns commands."""
    commands = {}
    for name in TEACHERS:
        out = os.path.join(workdir, 'teachers', name)
        scale = SCALES[args.scale]
        overrides = [f'data.data_dir={args.data_dir}'] + _valid(
            scale.get(f'{name.split("_")[1]}_teacher', scale['teacher']),
            f'arm={name}',
        )
        cmd = [
            sys.executable,
            '-m',
            'jaxdistill.train',
            '--config',
            f'{CONFIG}:arm={name}',
            '--workdir',
            out,
        ] + [f'--config.{o}' for o in overrides]
        commands[name] = shlex.join(['python', *cmd[1:]])
        if os.path.exists(os.path.join(out, 'summary.json')):
            print(f'{name}: reusing {out}', flush=True)
            continue
        print(f'{name}: training ({commands[name]})', flush=True)
        started = time.time()
        subprocess.run(cmd, check=True, cwd=common.REPO, stdout=subprocess.DEVNULL)
        print(f'{name}: {time.time() - started:.0f}s', flush=True)
    return commands


def evaluate(workdir, split, step=None):
    """Accuracy (%) of a run's checkpoint (latest or `step`) on `split`."""
    from jaxdistill import cli, configuration, trainer  # pylint: disable=g-import-not-at-top

    config = configuration.apply_overrides(
        cli.workdir_config(workdir), [f'data.eval_split={split}']
    )
    t = trainer.Trainer(config, workdir, restore_step=step, read_only=True)
    return 100 * t.evaluate(t.start_step)['eval/accuracy'], t


def best_dev_step(workdir):
    """(step, dev accuracy %) of the best evaluation in metrics.jsonl."""
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
        evals = [r for r in map(json.loads, f) if 'eval/accuracy' in r]
    best = max(evals, key=lambda r: (r['eval/accuracy'], -r['step']))
    return best['step'], 100 * best['eval/accuracy']


def train_student(args, workdir, arm, teachers, seed):
    """Trains one student arm in-process; returns its record."""
    from jaxdistill import configuration, trainer  # pylint: disable=g-import-not-at-top

    arg = f'arm={arm}' + (f',teachers={"+".join(teachers)}' if teachers else '')
    config = configuration.load_config(f'{CONFIG}:{arg}')
    overrides = [f'data.data_dir={args.data_dir}', f'seed={seed}'] + _valid(
        SCALES[args.scale]['student'], arg
    )
    configuration.apply_overrides(config, overrides)
    if not os.path.exists(os.path.join(workdir, 'summary.json')):
        trainer.train_and_evaluate(config, workdir)
    step, dev = best_dev_step(workdir)
    test, _ = evaluate(workdir, 'test', step)
    with open(os.path.join(workdir, 'summary.json'), encoding='utf-8') as f:
        summary = json.load(f)
    return {
        'acc_test': test,
        'acc_dev_best': dev,
        'best_step': step,
        'steps_per_s': summary['steps_per_s'],
        'config_arg': arg,
        'overrides': overrides,
    }


def time_phases(t, repeats=5, steps=200):
    """Seconds per compiled step of each phase, best of `repeats` rounds."""
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top

    batch = sharding.global_batch(t.task.train_batches.batch_at(0, 0), t.batch_sharding)
    state, best = t.state, {}
    for _ in range(repeats):
        for phase in ('equal', 'act', 'learn'):
            state, aux = t.step_fn(state, batch, phase)  # Compile / warm.
            jax.block_until_ready(aux)
            started = time.perf_counter()
            for _ in range(steps):
                state, aux = t.step_fn(state, batch, phase)
            jax.block_until_ready(aux)
            sec = (time.perf_counter() - started) / steps
            best[phase] = min(best.get(phase, sec), sec)
    return best


def weight_analysis(t, num_batches=40):
    """Per teacher: confidence (gold prob) and selection prob on training rows."""
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    m = t.method

    @jax.jit
    def probe(params, policy, batch):
        out = m.model.apply_exits(params, batch, train=False)
        logits, feature = out['logits'][-1], out['features'][-1]
        labels, _ = m.model.labels(batch)
        kl = m.teacher_kl(logits, batch['teacher_logits'])
        states = m.policy_states(feature, batch['teacher_logits'], labels, kl)
        probs = jax.nn.softmax(batch['teacher_logits'], -1)
        gold = jnp.take_along_axis(probs, labels[:, None, None], -1)[..., 0]
        return gold, m.select_probs(policy, states)

    golds, sels = [], []
    for i in range(num_batches):
        batch = t.task.train_batches.batch_at(0, i)
        g, s = probe(t.state.params, t.state.extra['policy'], batch)
        golds.append(np.asarray(g))
        sels.append(np.asarray(s))
    return np.concatenate(golds), np.concatenate(sels)


def weights_over_training(workdir, k):
    with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
        rows = [r for r in map(json.loads, f) if 'train/weight_t0' in r]
    return [r['step'] for r in rows], [
        [r[f'train/weight_t{i}'] for r in rows] for i in range(k)
    ]


def plot(path, gold, sel, steps, weights, names):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    edges = np.linspace(0, 1, 11)
    for k, name in enumerate(names):
        idx = np.clip(np.digitize(gold[:, k], edges) - 1, 0, 9)
        xs, ys = [], []
        for j in range(10):
            if np.sum(idx == j) >= 20:
                xs.append(gold[idx == j, k].mean())
                ys.append(sel[idx == j, k].mean())
        a.plot(xs, ys, 'o-', label=name)
        b.plot(steps, weights[k], label=name)
    a.set_xlabel("teacher's probability of the gold label (confidence)")
    a.set_ylabel('learned selection probability')
    a.set_title('RL policy vs teacher confidence (train rows, seed 0)')
    a.legend()
    b.set_xlabel('step')
    b.set_ylabel('mean teacher weight w_k')
    b.set_title('Per-teacher weight over training (seed 0)')
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _mean_std(values):
    return {'mean': float(np.mean(values)), 'std': float(np.std(values))}


def main():
    args = _parse()
    started = time.time()
    import jax  # pylint: disable=g-import-not-at-top

    workdir = os.path.join(args.workdir, args.scale)
    commands = train_teachers(args, workdir)
    teacher_dirs = [os.path.join(workdir, 'teachers', n) for n in TEACHERS]
    teachers = {}
    for name, d in zip(TEACHERS, teacher_dirs):
        test, t = evaluate(d, 'test')
        with open(os.path.join(d, 'summary.json'), encoding='utf-8') as f:
            dev = 100 * json.load(f)['eval/accuracy']  # Its last step, on dev.
        teachers[name] = {
            'acc_test': test,
            'acc_dev': dev,
            'num_params': int(
                sum(np.prod(x.shape) for x in jax.tree.leaves(t.state.params))
            ),
            'command': commands[name],
        }
        print(name, teachers[name], flush=True)
    arms = {'student': ('student', ())}
    for name, d in zip(TEACHERS, teacher_dirs):
        arms[f'kd_{name[len("teacher_") :]}'] = ('kd', (d,))
    arms['kd_equal'] = ('kd', tuple(teacher_dirs))
    arms['rl'] = ('rl', tuple(teacher_dirs))
    runs = {name: [] for name in arms}
    for seed in range(args.seeds):
        for name, (arm, ts) in arms.items():
            out = os.path.join(workdir, f'seed{seed}', name)
            t0 = time.time()
            runs[name].append(train_student(args, out, arm, ts, seed))
            print(
                f'seed {seed} {name}: test {runs[name][-1]["acc_test"]:.2f} '
                f'({time.time() - t0:.0f}s, total {time.time() - started:.0f}s)',
                flush=True,
            )
    rl_dir = os.path.join(workdir, 'seed0', 'rl')
    _, t = evaluate(rl_dir, 'dev')
    gold, sel = weight_analysis(t)  # Before timing: that donates t.state.
    phases = time_phases(t)
    every = t.method.policy_every
    rl_step = (phases['learn'] + (every - 1) * phases['act']) / every
    steps, weights = weights_over_training(rl_dir, len(TEACHERS))
    mean = {name: _mean_std([r['acc_test'] for r in rs]) for name, rs in runs.items()}
    singles = {
        n: mean[n]['mean'] for n in mean if n.startswith('kd_') and n != 'kd_equal'
    }
    best_single = max(singles, key=singles.get)
    corr = {
        name: float(np.corrcoef(gold[:, k], sel[:, k])[0, 1])
        for k, name in enumerate(TEACHERS)
    }
    result = {
        'scale': f'{args.scale}: teachers trained once (seed 0), '
        f'{args.seeds} seed(s) per student arm',
        'acc_student_alone': mean['student']['mean'],
        'acc_best_single_teacher_kd': mean[best_single]['mean'],
        'best_single_teacher': best_single,
        'acc_equal_weight_kd': mean['kd_equal']['mean'],
        'acc_rl_kd': mean['rl']['mean'],
        'policy_overhead': rl_step / phases['equal'] - 1,
        'policy_overhead_detail': {
            'seconds_per_step': phases,
            'policy_every': every,
            'note': 'compiled steps timed on one batch, best of 5 rounds of 200, '
            'phases interleaved; '
            'overhead = mean step of the alternating schedule (1 learn + '
            f'{every - 1} act) / equal-weight KD step - 1',
        },
        'teachers': teachers,
        'arms': {n: {**mean[n], 'runs': runs[n]} for n in runs},
        'targets': {
            'rl_ge_equal_plus_0.5': mean['rl']['mean']
            >= mean['kd_equal']['mean'] + 0.5,
            'rl_above_best_single': mean['rl']['mean'] > mean[best_single]['mean'],
            'overhead_le_10pct': rl_step / phases['equal'] - 1 <= 0.10,
        },
        'policy_vs_confidence': {
            'pearson_selection_prob_vs_gold_prob': corr,
            'mean_selection_prob': dict(zip(TEACHERS, map(float, sel.mean(0)))),
            'mean_teacher_confidence': dict(zip(TEACHERS, map(float, gold.mean(0)))),
            'final_mean_weight': {n: weights[k][-1] for k, n in enumerate(TEACHERS)},
        },
        'student_command_example': (
            f'python -m jaxdistill.train --config {CONFIG}:{runs["rl"][0]["config_arg"]}'
            f' --workdir {rl_dir}'
        ),
        'wall_seconds': time.time() - started,
        'note': args.note,
    }
    name = 'rlkd_sst2' + ('' if args.scale == 'cpu' else f'_{args.scale}')
    path = common.write_result(name, result)
    plot(path.with_suffix('.png'), gold, sel, steps, weights, TEACHERS)
    print(
        json.dumps({k: v for k, v in result.items() if k.startswith('acc')}, indent=2)
    )


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
