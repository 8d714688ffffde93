"""STL, MTL, MT2ST-Diminish and MT2ST-Switch on SST-2 (+ skip-gram on Brown).

    python benchmarks/mt2st_sst2.py [--seeds 3] [--steps 3000] [--eval-every 150]
        [--budget-minutes 32] [--scale gpu] [--quick] [--pretrained]

Every arm is `configs/mt2st_sst2.py:arm=NAME` run by the real trainer in this
process, seeds interleaved (seed 0 of every arm, then seed 1, ...) so a busy
machine slows every arm alike. `--scale gpu` trains the CNN head with wider
embeddings and 4x the skip-gram pairs, for a machine with an accelerator.

Clocks: training time is wall-clock from the trainer's start, minus the time
spent in evaluation; it includes compilation (once per phase) and building
the batches (skip-gram pairs too, while they are used). Data set-up
(vocabulary, encoding) is the same for every arm and left out. CPU seconds of
the process are recorded the same way: the machine is shared, and CPU time
moves less with other jobs' load than wall time does.

Target (fixed before any MT2ST figure is looked at): the mean final dev.tsv
accuracy (held-out training phrases) of the STL seeds minus 0.5 points. An
arm's time to target is its mean over seeds of the training time at the
first evaluation whose dev accuracy reaches it (a seed that never does
counts as its full training time and is reported in `reached`). Final
accuracy is on glue_dev.tsv (the GLUE dev sentences). The top-level
`time_ratio_*` keys are MT2ST-Diminish's; Switch's have a `_switch` suffix.
`step_costs` times the compiled STL step and the Switch arm's steps before and
after the switch side by side, with XLA's FLOP and byte counts
(`--step-costs-only` re-measures just those into the existing JSON).
`--pretrained` adds a fifth arm, a bound on what the auxiliary task can give:
STL whose embedding table starts from skip-gram vectors trained beforehand
(`jaxdistill.word2vec`, 10 epochs, one run per seed) on exactly the
auxiliary's corpus (Brown + SST-2 training text, the same vocabulary). It gets
the fully trained auxiliary embeddings for free: the word2vec seconds are
reported (`pretrain_s`) but not counted in its time to target.
Writes benchmarks/results/mt2st_sst2.json and .png.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from jaxdistill import configuration  # pylint: disable=g-import-not-at-top
from jaxdistill import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
from jaxdistill import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

CONFIG = common.REPO / 'configs' / 'mt2st_sst2.py'
ARMS = ('stl', 'mtl', 'diminish', 'switch')
PRETRAINED = 'pretrained'  # --pretrained: STL from skip-gram vectors.
sys.path.insert(0, str(CONFIG.parent))
import mt2st_sst2 as config_module  # noqa: E402

DATA = common.REPO.parent / 'shared' / 'data'


def make_config(arm, seed, args, vectors=None):
    base = 'stl' if arm == PRETRAINED else arm
    config = configuration.load_config(f'{CONFIG}:arm={base}')
    config.seed = seed
    config.num_train_steps = args.steps
    config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, args.steps // 10)
    config.method.aux_weights.skipgram = config_module.aux_weight(base, args.steps)
    if vectors:
        config.model.init_vectors = str(vectors)
    config.log_every_steps = config.eval.every_steps = args.eval_every
    config.checkpoint.every_steps = args.steps
    configuration.apply_overrides(config, common.mt2st_data_overrides(args.data_dir))
    if args.scale == 'gpu':
        config.model.update(dim=300, pooling='cnn', hidden=())
        config.data.skipgram.pairs = 4096
    if args.quick:
        config.data.max_train_examples = 4096
    return config


def pretrain_vectors(seed, args, path):
    """Skip-gram vectors on the auxiliary's corpus -> seconds of training.

    The corpus and vocabulary are the task's (Brown + SST-2 training text,
    data.min_count), so every word of the table has a vector.
    """
    from jaxdistill import word2vec  # pylint: disable=g-import-not-at-top
    from jaxdistill.data import words  # pylint: disable=g-import-not-at-top
    from jaxdistill.tasks import multitask  # pylint: disable=g-import-not-at-top

    config = make_config('mtl', seed, args)
    d = config.data
    _, _, corpus, vocab = multitask.load_text(d)
    ids, sentence = words.encode(corpus, vocab)
    options = word2vec.Options(
        dim=config.model.dim,
        window=d.skipgram.window,
        negative=d.skipgram.negatives,
        min_count=d.min_count,
        sample=d.skipgram.sample,
        seed=seed,
    )
    result = word2vec.train(ids, sentence, vocab, options)
    word2vec.save_word2vec(path, vocab.words, result['vectors'])
    return result['seconds']


def run_arm(arm, seed, args, workdir, vectors=None):
    """One training run -> {'curve': [...], 'final': {...}, 'setup_s': float}."""
    config = make_config(arm, seed, args, vectors)
    started = time.perf_counter()
    run = trainer_lib.Trainer(config, workdir)
    setup_s = time.perf_counter() - started
    curve, spent = [], {'wall': 0.0, 'cpu': 0.0}
    evaluate = run.evaluate

    def timed_evaluate(step, stop=None):
        wall, cpu = time.perf_counter(), time.process_time()
        point = {
            'step': step,
            'train_s': wall - clock['wall'] - spent['wall'],
            'train_cpu_s': cpu - clock['cpu'] - spent['cpu'],
        }
        m = evaluate(step, stop)
        spent['wall'] += time.perf_counter() - wall
        spent['cpu'] += time.process_time() - cpu
        point.update(
            dev=m['eval/dev/accuracy'],
            test=m['eval/test/accuracy'],
            ws353=m.get('eval/ws353'),
            simlex=m.get('eval/simlex'),
        )
        curve.append(point)
        return m

    run.evaluate = timed_evaluate
    clock = {'wall': time.perf_counter(), 'cpu': time.process_time()}
    run.run()
    return {
        'curve': curve,
        'setup_s': setup_s,
        'step_seconds': step_seconds(metrics_lib.read_metrics(workdir), args),
    }


def step_seconds(records, args):
    """Mean seconds per step of log windows with / without skip-gram.

    The first window (compilation) and windows spanning a switch are left out.
    """
    out = {'with_aux': [], 'without_aux': []}
    for r in records:
        if 'train/steps_per_s' not in r or r['step'] <= args.eval_every:
            continue
        n = r['train/aux_tasks']
        if n in (0.0, 1.0):
            key = 'with_aux' if n == 1.0 else 'without_aux'
            out[key].append(1.0 / r['train/steps_per_s'])
    return {k: float(np.mean(v)) if v else None for k, v in out.items()}


def time_to_target(curve, target):
    """(training seconds, CPU seconds, reached?, step) at the first point >=
    target (the last point if none is)."""
    for p in curve:
        if p['dev'] >= target:
            return p['train_s'], p['train_cpu_s'], True, p['step']
    last = curve[-1]
    return last['train_s'], last['train_cpu_s'], False, last['step']


def summarize(runs, seeds_done):
    stl_final = [runs['stl'][s]['curve'][-1]['dev'] for s in seeds_done]
    target = float(np.mean(stl_final)) - 0.005
    arms = {}
    for arm in runs:
        rs = [runs[arm][s] for s in seeds_done]
        hits = [time_to_target(r['curve'], target) for r in rs]
        final = [r['curve'][-1] for r in rs]
        arms[arm] = {
            'time_to_target_s': float(np.mean([h[0] for h in hits])),
            'time_to_target_s_per_seed': [h[0] for h in hits],
            'cpu_to_target_s': float(np.mean([h[1] for h in hits])),
            'reached': [h[2] for h in hits],
            'steps_to_target_per_seed': [h[3] for h in hits],
            'final_test_accuracy': float(np.mean([f['test'] for f in final])),
            'final_test_accuracy_per_seed': [f['test'] for f in final],
            'final_test_accuracy_std': float(np.std([f['test'] for f in final])),
            'final_dev_accuracy': float(np.mean([f['dev'] for f in final])),
            'ws353': float(np.mean([f['ws353'] for f in final])),
            'simlex': float(np.mean([f['simlex'] for f in final])),
            'train_s': float(np.mean([f['train_s'] for f in final])),
            'train_cpu_s': float(np.mean([f['train_cpu_s'] for f in final])),
            'setup_s': float(np.mean([r['setup_s'] for r in rs])),
            'seconds_per_step': {
                k: _mean([r['step_seconds'][k] for r in rs])
                for k in ('with_aux', 'without_aux')
            },
        }
    result = {'target_dev_accuracy': target, 'arms': arms}
    t = {a: arms[a]['time_to_target_s'] for a in ARMS}
    c = {a: arms[a]['cpu_to_target_s'] for a in ARMS}
    for variant, suffix in (('diminish', ''), ('switch', '_switch')):
        result[f'time_ratio_vs_stl{suffix}'] = t[variant] / t['stl']
        result[f'time_ratio_vs_mtl{suffix}'] = t[variant] / t['mtl']
        result[f'cpu_ratio_vs_stl{suffix}'] = c[variant] / c['stl']
        result[f'cpu_ratio_vs_mtl{suffix}'] = c[variant] / c['mtl']
    for arm in ARMS:
        result[f'acc_{arm}'] = arms[arm]['final_test_accuracy']
    if PRETRAINED in arms:
        p = arms[PRETRAINED]
        p['pretrain_s'] = float(
            np.mean([runs[PRETRAINED][s]['pretrain_s'] for s in seeds_done])
        )
        result['time_ratio_pretrained_vs_stl'] = p['time_to_target_s'] / t['stl']
        result['acc_pretrained'] = p['final_test_accuracy']
    for variant in ('diminish', 'switch'):
        v = arms[variant]
        result[f'targets_met_{variant}'] = {
            'time_vs_stl<=0.5': t[variant] <= 0.5 * t['stl'] and all(v['reached']),
            'time_vs_mtl<=0.9': t[variant] <= 0.9 * t['mtl'] and all(v['reached']),
            'acc>=stl_and_mtl': v['final_test_accuracy']
            >= max(
                arms['stl']['final_test_accuracy'], arms['mtl']['final_test_accuracy']
            ),
        }
    return result


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def plot(runs, seeds_done, target, path):
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    colors = dict(
        zip(
            (*ARMS, PRETRAINED),
            ('tab:gray', 'tab:blue', 'tab:orange', 'tab:green', 'tab:purple'),
            strict=True,
        )
    )
    labels = {
        'stl': 'STL',
        'mtl': 'MTL',
        'diminish': 'MT2ST-Diminish',
        'switch': 'MT2ST-Switch',
        PRETRAINED: 'STL from pre-trained skip-gram (bound)',
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in (
        (axes[0], 'dev', 'dev.tsv (held-out phrases)'),
        (axes[1], 'test', 'glue_dev.tsv'),
    ):
        for arm in runs:
            for i, s in enumerate(seeds_done):
                c = runs[arm][s]['curve']
                ax.plot(
                    [p['train_s'] for p in c],
                    [100 * p[key] for p in c],
                    color=colors[arm],
                    alpha=0.8,
                    lw=1,
                    label=labels[arm] if i == 0 else None,
                )
        if key == 'dev':
            ax.axhline(100 * target, color='k', ls='--', lw=0.8, label='target')
        ax.set_xlabel('training wall time (s, evaluation excluded)')
        ax.set_ylabel('accuracy (%)')
        ax.set_title(title)
        lo = min(
            100 * p[key]
            for a in runs
            for s in seeds_done
            for p in (runs[a][s]['curve'][2:] or runs[a][s]['curve'])
        )
        ax.set_ylim(lo - 1, None)
        ax.legend(fontsize=8)
    fig.suptitle(
        f'SST-2 with a skip-gram auxiliary task ({len(seeds_done)} seeds each)'
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def step_costs(args, workdir, repeats=5, steps=40):
    """Per-step cost of the compiled steps, measured side by side.

    STL's step, and the Switch arm's step before (skip-gram) and after the
    switch, timed in alternating rounds of `steps` steps in one process (so
    the machine's load hits them alike); best round kept. Also XLA's own
    FLOP and byte counts of each executable. Batch preparation is excluded.
    """
    import jax  # pylint: disable=g-import-not-at-top

    from jaxdistill import sharding  # pylint: disable=g-import-not-at-top

    runs = {
        arm: trainer_lib.Trainer(make_config(arm, 0, args), f'{workdir}/{arm}')
        for arm in ('stl', 'switch')
    }
    off = runs['switch'].method.off_steps['skipgram']
    cases = {
        'stl': (runs['stl'], (), 0),
        'switch_before': (runs['switch'], ('skipgram',), 0),
        'switch_after': (runs['switch'], (), off),
    }
    out, prepared = {}, {}
    for name, (run, phase, first) in cases.items():
        batches = [
            sharding.global_batch(
                run.task.train_batches.at_step(first + i), run.batch_sharding
            )
            for i in range(steps)
        ]
        with jax.set_mesh(run.mesh):
            compiled = run.step_fn.build(phase).lower(run.state, batches[0]).compile()
        cost = compiled.cost_analysis()
        out[name] = {
            'flops': float(cost.get('flops', 0.0)),
            'bytes_accessed': float(cost.get('bytes accessed', 0.0)),
            'seconds': [],
        }
        prepared[name] = (run, compiled, batches)
    for _ in range(repeats):
        for name, (run, compiled, batches) in prepared.items():
            state = run.state
            start = time.perf_counter()
            for b in batches:
                state, aux = compiled(state, b)
            jax.block_until_ready(aux)
            out[name]['seconds'].append((time.perf_counter() - start) / steps)
            run.state = state
    for v in out.values():
        v['seconds_per_step'] = min(v.pop('seconds'))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--eval-every', type=int, default=150)
    parser.add_argument('--budget-minutes', type=float, default=32.0)
    parser.add_argument('--scale', choices=('cpu', 'gpu'), default='cpu')
    parser.add_argument(
        '--data_dir', default=str(DATA), help='the folder holding sst2/ and words/'
    )
    parser.add_argument(
        '--quick', action='store_true', help='4,096 phrases; smoke test'
    )
    parser.add_argument(
        '--pretrained',
        action='store_true',
        help='also STL from skip-gram vectors trained beforehand (a bound)',
    )
    parser.add_argument(
        '--step-costs-only',
        action='store_true',
        help='only (re)measure step_costs, into the existing JSON',
    )
    args = parser.parse_args()
    if args.step_costs_only:
        path = common.RESULTS / 'mt2st_sst2.json'
        record = json.loads(path.read_text())
        # The step costs belong to the run the file records: the same model,
        # data and scale (a --quick or another size would rewrite part of a
        # committed result with figures of something else).
        if (
            args.quick
            or args.steps != record['steps']
            or not record['scale'].startswith(f'{args.scale}:')
        ):
            parser.error(
                f'--step-costs-only re-measures the step costs of {path.name}, '
                f'whose run had --steps {record["steps"]} and --scale '
                f'{record["scale"].split(":")[0]} (no --quick); give the same.'
            )
        with tempfile.TemporaryDirectory() as tmp:
            record['step_costs'] = step_costs(args, tmp)
        record['step_costs_command'] = common.provenance()['command']
        record['step_costs_date'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        path.write_text(json.dumps(record, indent=2) + '\n')
        print(json.dumps(record['step_costs'], indent=2))
        return
    started = time.perf_counter()
    arms = (*ARMS, PRETRAINED) if args.pretrained else ARMS
    runs = {arm: {} for arm in arms}
    seeds_done = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            elapsed = time.perf_counter() - started
            if seeds_done and elapsed / len(seeds_done) * (len(seeds_done) + 1) > (
                60 * args.budget_minutes
            ):
                print(f'stopping after {len(seeds_done)} seeds (time budget)')
                break
            for arm in arms:
                print(f'=== {arm}, seed {seed}', flush=True)
                vectors, pretrain_s = None, None
                if arm == PRETRAINED:
                    vectors = pathlib.Path(tmp) / f'vectors_{seed}.txt'
                    pretrain_s = pretrain_vectors(seed, args, vectors)
                runs[arm][seed] = run_arm(
                    arm, seed, args, f'{tmp}/{arm}_{seed}', vectors
                )
                if pretrain_s is not None:
                    runs[arm][seed]['pretrain_s'] = pretrain_s
            seeds_done.append(seed)
        result = summarize(runs, seeds_done)
        result['step_costs'] = step_costs(args, f'{tmp}/step_costs')
    config = make_config('switch', 0, args)
    result.update(
        scale=(
            f'{args.scale}: {len(seeds_done)} seed(s) of {args.seeds} asked, '
            f'{args.steps} steps of batch {config.data.batch_size} '
            f'(~{args.steps * config.data.batch_size / 60614:.1f} SST-2 epochs)'
            + (', 4,096 training phrases (--quick)' if args.quick else '')
        ),
        seeds=seeds_done,
        steps=args.steps,
        eval_every=args.eval_every,
        schedules={
            a: make_config(a, 0, args).method.aux_weights.skipgram for a in ARMS
        },
        threshold=config.method.threshold,
        model=config.model.to_dict(),
        skipgram=config.data.skipgram.to_dict(),
        optimizer={
            k: v for k, v in config.optimizer.to_dict().items() if k != 'total_steps'
        },
        benchmark_seconds=time.perf_counter() - started,
        curves={arm: {s: runs[arm][s]['curve'] for s in seeds_done} for arm in arms},
    )
    result['schedules'] = {
        a: (s.to_dict() if hasattr(s, 'to_dict') else s)
        for a, s in result['schedules'].items()
    }
    # A smoke run (--quick) must not replace the committed result.
    name = 'mt2st_sst2' + ('_quick' if args.quick else '')
    common.write_result(name, result)
    plot(
        runs,
        seeds_done,
        result['target_dev_accuracy'],
        common.RESULTS / f'{name}.png',
    )
    for key in (
        'target_dev_accuracy',
        'time_ratio_vs_stl',
        'time_ratio_vs_mtl',
        'time_ratio_vs_stl_switch',
        'time_ratio_vs_mtl_switch',
        'acc_stl',
        'acc_mtl',
        'acc_diminish',
        'acc_switch',
        *(
            ('time_ratio_pretrained_vs_stl', 'acc_pretrained')
            if args.pretrained
            else ()
        ),
    ):
        print(f'{key}: {result[key]:.4f}')


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
