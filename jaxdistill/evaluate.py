"""`python -m jaxdistill.evaluate --workdir DIR [--step N]`.

Evaluates the latest (or the named) checkpoint in DIR with the config the run
was trained with (DIR/config.json); `--config` and `--config.k=v` may change
evaluation settings such as `eval.max_examples`, or the split scored:
`--config.data.eval_split=test_2016_flickr` (translation, image and text
classification; MT2ST scores every split of `eval.splits`).

Prints the metrics as one JSON object on stdout (`> scores.json`, `| jq`),
non-finite values as the strings "nan"/"inf" as metrics.jsonl holds them;
progress, sample translations, notes and a multi-exit model's early-exit table
go to stderr.
"""

import contextlib
import json
import os
import sys


from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import hostmem
from jaxdistill import metrics as metrics_lib
from jaxdistill.errors import JaxdistillError


def main(argv=None) -> int:
    cli.quiet_tensorflow()
    args, overrides = cli.parse(
        sys.argv[1:] if argv is None else argv,
        'evaluate',
        __doc__,
        need_config=False,
        with_step=True,
    )

    def run():
        config = (
            configuration.load_config(args.config)
            if args.config
            else cli.workdir_config(args.workdir)
        )
        config = configuration.apply_overrides(config, overrides)
        from jaxdistill import sharding  # pylint: disable=g-import-not-at-top

        sharding.maybe_initialize_distributed(config.get('distributed'))
        import jax  # pylint: disable=g-import-not-at-top
        from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

        ckpt_dir = os.path.join(args.workdir, 'checkpoints')
        if not cli.saved_steps(ckpt_dir):  # Before any data is read.
            raise JaxdistillError(
                f'No checkpoints in {ckpt_dir} (has the run saved one yet?).'
            )
        step = cli.resolve_step(args.workdir, config, args.step)
        # stdout holds the JSON alone (`> scores.json`, `| jq`); the progress,
        # samples, notes and the early-exit table go to stderr.
        results = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            t = trainer.Trainer(config, args.workdir, restore_step=step, read_only=True)
            metrics = t.evaluate(int(t.start_step))
        if jax.process_index() == 0:
            # Written as metrics.jsonl writes them: a bare NaN is not JSON.
            values = {k: metrics_lib.plain(float(v)) for k, v in metrics.items()}
            print(
                json.dumps({'step': int(t.start_step), **values}, indent=2),
                file=results,
                flush=True,
            )
            curve = t.last_curve
            if curve:  # Multi-exit models: the anytime early-exit curve.
                from jaxdistill.evaluation import early_exit  # pylint: disable=g-import-not-at-top

                # Of the model whose metrics are unprefixed (the first).
                model = f' of {t.last_curve_model}' if t.last_curve_model else ''
                print(
                    f'early exit{model} (accuracy vs measured time of the plain '
                    'network):',
                    file=sys.stderr,
                )
                print(early_exit.format_curve(curve), file=sys.stderr)
                note = early_exit.timing_note(metrics.get('eval/seconds_plain'))
                if note:
                    print(note, file=sys.stderr)

    return cli.main_guard(run)


if __name__ == '__main__':
    hostmem.reexec_with_huge_pages()
    cli.exit_process(main())
