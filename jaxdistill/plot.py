"""`python -m jaxdistill.plot --workdir DIR [--workdir DIR2 ...] [--out FILE.png]`.

Plots the curves of one or more training runs from their DIR/metrics.jsonl:
one panel per metric, one line per run (and per capacity, replica or exit
where a run logs several: `eval/x0.25/bleu`, `eval/r1/loss`,
`eval/accuracy_exit0`). By default the panels are the training loss (and
for TSJT each capacity's training NLL), the evaluation loss, BLEU, accuracy
and churn, each where some run logged it, and for self-distillation the
early-exit curve of the last evaluation (accuracy against the measured
fraction of the whole network's time);
`--metric` picks others, as glob patterns over the logged names (one panel
each, e.g. `--metric 'eval/*bleu_tok_lc' --metric train/learning_rate`).
The x axis is the step, or with `--x minutes` the wall-clock minutes since
the run's first record (a resumed run's pause shows as a jump).

A training run writes DIR/metrics.png like this at its end. A `--workdir`
that is a folder of runs (a sweep) draws every run in it, two levels down;
of several runs, one that has started but not logged yet is left out, with a
note. `--out` takes its format from its extension (.png, .pdf, .svg, ...);
an existing folder means FOLDER/metrics.png.

  python -m jaxdistill.plot --workdir /tmp/a --workdir /tmp/b --out /tmp/ab.png
"""

import fnmatch
import math
import os
import re
import sys
from collections.abc import Sequence

from jaxdistill import cli
from jaxdistill import metrics as metrics_lib
from jaxdistill import runs as runs_lib
from jaxdistill.errors import ConfigError, DataError, JaxdistillError

# (panel title, regular expression over the logged names).
DEFAULT_PANELS = (
    # Per replica (codistillation: train/loss/r0) and per exit
    # (self-distillation: eval/loss_exit0) too.
    ('training loss', r'train/(.+/)?loss(/r\d+|_exit\d+)?'),
    # TSJT: each capacity's own label loss (its train/loss is the weighted
    # sum over capacities); the sampled middle capacities change each step.
    ('training NLL per capacity', r'train/(?!middle\d)[^/]+/nll'),
    ('evaluation loss', r'eval/(.+/)?loss(/r\d+|_exit\d+)?'),
    ('BLEU (sacreBLEU)', r'eval/(.+/)?bleu'),
    ('accuracy', r'eval/((?!early_exit)[^/]+/)?accuracy(_exit\d+)?'),
    ('churn', r'eval/churn'),
)
X_AXES = ('step', 'minutes')
EARLY_EXIT = re.compile(r'eval/early_exit_([^/]+)/(accuracy|time_fraction)')
EARLY_EXIT_TITLE = 'early exit (last evaluation)'


def _labels(workdirs: Sequence[str]) -> list[str]:
    """Short names for the runs: the folder names, or whole paths if two
    runs share a folder name."""
    names = [os.path.basename(os.path.normpath(w)) or w for w in workdirs]
    return names if len(set(names)) == len(names) else [str(w) for w in workdirs]


# How metrics.jsonl holds a non-finite value (`metrics.plain`).
_NON_FINITE = ('nan', 'inf', '-inf')


def _series(records: list[dict], key: str, x: str) -> tuple[list, list, list]:
    """(xs, ys, steps whose value is not finite). A NaN or Inf value is
    drawn as a gap (NaN), not dropped: the line breaks where it was."""
    start = records[0].get('time', 0.0) if records else 0.0
    xs, ys, bad = [], [], []
    for r in records:
        value = r.get(key)
        if value in _NON_FINITE:
            bad.append(r['step'])
            value = math.nan
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                bad.append(r['step'])
                value = math.nan
        else:
            continue
        xs.append(r['step'] if x == 'step' else (r.get('time', start) - start) / 60)
        ys.append(value)
    return xs, ys, bad


def early_exit_curve(records: list[dict]) -> list[tuple[float, float, str]]:
    """[(time_fraction, accuracy, threshold)] of the last evaluation that
    logged an early-exit curve (self-distillation), by time fraction."""
    for r in reversed(records):
        points = {}
        for key, value in r.items():
            m = EARLY_EXIT.fullmatch(key)
            if m:
                points.setdefault(m.group(1), {})[m.group(2)] = value
        curve = [
            (p['time_fraction'], p['accuracy'], t)
            for t, p in points.items()
            if len(p) == 2
        ]
        if curve:
            return sorted(curve)
    return []


def panels_for(keys: set[str], patterns: Sequence[str] = ()) -> list[tuple]:
    """[(title, [logged names])] for the panels that match something.

    `patterns` are globs, one panel each; none means DEFAULT_PANELS.
    """
    chosen = (
        [(p, fnmatch.translate(p)) for p in patterns] if patterns else DEFAULT_PANELS
    )
    out = []
    for title, regex in chosen:
        matched = sorted(k for k in keys if re.fullmatch(regex, k))
        if matched:
            out.append((title, matched))
        elif patterns:
            close = sorted(k for k in keys if k not in ('step', 'time'))
            raise ConfigError(
                f'--metric {title!r} matches no logged metric; the runs logged: '
                + ', '.join(close)
            )
    return out


def supported_formats() -> list[str]:
    """The image formats (file name extensions) matplotlib can write."""
    from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top

    return sorted(backend_agg.FigureCanvasAgg.get_supported_filetypes())


def out_path(out: str) -> str:
    """The file `plot_runs` writes for `out`: `out/metrics.png` if `out` is a
    folder (an existing one, or a path ending in a separator), `out.png` if
    it has no extension, else `out` itself.

    Raises:
      ConfigError: the extension is not an image format matplotlib writes.
      JaxdistillError: a remote path (gs://...), which would be written as
        a local folder named 'gs:'.
    """
    cli.check_local(out, '--out')
    if out.endswith(('/', os.sep)) or os.path.isdir(out):
        return os.path.join(out, 'metrics.png')
    ext = os.path.splitext(out)[1].lstrip('.')
    if not ext:
        return out + ('png' if out.endswith('.') else '.png')
    formats = supported_formats()
    if ext.lower() not in formats:
        raise ConfigError(
            f'--out {out!r}: cannot write a .{ext} image; the supported formats '
            'are: ' + ', '.join(formats) + '.'
        )
    return out


def _has_logged(workdir: str) -> bool:
    """False for a run that has started (holds config.json) but not logged
    yet (no metrics.jsonl); True otherwise, so that a path holding no run at
    all gets read_metrics's error."""
    return os.path.exists(os.path.join(workdir, 'metrics.jsonl')) or not (
        os.path.isfile(os.path.join(workdir, 'config.json'))
    )


def plot_runs(
    workdirs: Sequence[str],
    out: str,
    *,
    patterns: Sequence[str] = (),
    x: str = 'step',
) -> list[str]:
    """Draws the runs' curves into `out_path(out)`; returns the panel titles.

    Of several runs, one that has not logged yet (config.json but no
    metrics.jsonl) is left out, with a note on stderr.

    Raises:
      DataError: a workdir has no readable metrics.jsonl (none of several
        runs has logged yet, or a path holds no run), or nothing to plot.
      ConfigError: an unknown x axis or image format, or a pattern that
        matches nothing.
    """
    if x not in X_AXES:
        raise ConfigError(f'x axis {x!r} unknown; valid: {" | ".join(X_AXES)}.')
    out = out_path(out)
    waiting = [w for w in workdirs if not _has_logged(w)]
    if len(waiting) == 1 == len(workdirs):
        raise DataError(
            f'{os.path.join(waiting[0], "metrics.jsonl")} does not exist yet: the '
            f'run in {waiting[0]} has started but not logged yet.'
        )
    if waiting and len(waiting) == len(workdirs):
        raise DataError(
            f'no run has logged yet: {", ".join(waiting)} (each holds config.json '
            'but no metrics.jsonl yet).'
        )
    for w in waiting:
        print(f'note: skipping {w}: it has not logged yet.', file=sys.stderr)
    workdirs = [w for w in workdirs if w not in waiting]
    runs = [metrics_lib.read_metrics(w) for w in workdirs]
    keys = set().union(*(r.keys() for records in runs for r in records))
    labels = _labels(workdirs)
    x_label = 'step' if x == 'step' else 'wall-clock minutes'
    # (title, x label, [(line label, xs, ys)]) per panel.
    panels = []
    for title, names in panels_for(keys, patterns):
        lines = []
        for label, records in zip(labels, runs):
            for name in names:
                xs, ys, bad = _series(records, name, x)
                if len(runs) == 1:
                    label_of_line = name
                else:
                    label_of_line = label if len(names) == 1 else f'{label}: {name}'
                if bad:
                    shown = ', '.join(map(str, bad[:5])) + (
                        ' ...' if len(bad) > 5 else ''
                    )
                    print(
                        f'note: {label}: {name} is not finite at '
                        f'{len(bad)} step(s) ({shown}); drawn as gaps.',
                        file=sys.stderr,
                    )
                if xs:
                    lines.append((label_of_line, xs, ys))
        panels.append((title, x_label, lines))
    curves = [(label, early_exit_curve(r)) for label, r in zip(labels, runs)]
    if not patterns and any(c for _, c in curves):
        lines = [
            (label, [p[0] for p in c], [p[1] for p in c]) for label, c in curves if c
        ]
        panels.append((EARLY_EXIT_TITLE, 'measured time / the whole network', lines))
    if not panels:
        raise DataError(
            'nothing to plot: '
            + ', '.join(f'{w}/metrics.jsonl' for w in workdirs)
            + ' hold no losses or evaluations yet.'
        )
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    cols = min(len(panels), 3)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False
    )
    for ax, (title, x_label, lines) in zip(axes.flat, panels):
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker='.' if len(xs) < 30 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.grid(alpha=0.3)
        if len(lines) > 1 or len(runs) > 1:  # Which run a lone line is.
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis('off')
    fig.tight_layout()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as e:
        raise JaxdistillError(
            f'--out {out} cannot be written: {e.strerror or e}; give --out '
            'a path elsewhere (e.g. of a run on a read-only mount).'
        ) from None
    finally:
        plt.close(fig)
    return [title for title, _, _ in panels]


def main(argv=None) -> int:
    parser = cli.parser_for('plot', __doc__)
    parser.add_argument(
        '--workdir',
        action='append',
        required=True,
        help='a run, or a folder of runs two levels down (repeat for more)',
    )
    parser.add_argument(
        '--out',
        default='',
        help='image to write, its format from its extension (.png, .pdf, .svg, '
        '...); a folder means FOLDER/metrics.png, no extension adds .png '
        '(default: DIR/metrics.png of one run)',
    )
    parser.add_argument(
        '--metric',
        action='append',
        default=[],
        help='glob over logged names, one panel each (repeatable)',
    )
    parser.add_argument('--x', default='step', choices=X_AXES, help='the x axis')
    args = cli.expand_user(parser.parse_args(sys.argv[1:] if argv is None else argv))
    # A folder of runs stands for the runs in it (as for `jaxdistill.runs`);
    # a path that holds none is kept, so its error names it.
    workdirs = runs_lib.unique_paths(
        w for path in args.workdir for w in runs_lib.find_runs(path) or [path]
    )
    if not args.out and len(workdirs) > 1:
        if len(args.workdir) != 1 or not os.path.isdir(args.workdir[0]):
            parser.error('--out is needed with several runs')
        # One folder of runs (a sweep): the picture goes in it.
        out = os.path.join(args.workdir[0], 'metrics.png')
    else:
        out = args.out or os.path.join(workdirs[0], 'metrics.png')

    def run():
        path = out_path(out)  # Before anything is read or drawn.
        titles = plot_runs(workdirs, path, patterns=args.metric, x=args.x)
        print(f'wrote {path} ({", ".join(titles)})')

    return cli.main_guard(run)


if __name__ == '__main__':
    sys.exit(main())
