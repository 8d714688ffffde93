"""`python -m jaxdistill.train --config configs/X.py[:arg] --workdir DIR`.

Trains the method and task the config names; restarts from the latest
checkpoint in DIR automatically. Override any field: `--config.a.b=value`.
`--workdir DIR` alone resumes a run with the config file and overrides it was
started with (DIR/config_source.json), after which further `--config.a.b=value`
apply. `--print_config` prints the config as the file and the overrides make
it, then checks it as a run would at its start (without data), and exits.
"""

import sys

from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import hostmem
from jaxdistill import workdir_lock


def main(argv=None) -> int:
    cli.quiet_tensorflow()
    args, overrides = cli.parse(
        sys.argv[1:] if argv is None else argv,
        'train',
        __doc__,
        with_print_config=True,
        need_config=False,
    )
    if not args.config and not args.workdir:
        print(
            'error: --config is required (or --workdir of a run to resume).',
            file=sys.stderr,
        )
        return 2

    def run():
        if args.config:
            config = cli.load(args, overrides)
            source, said = cli.source_record(args.config, overrides), ''
        else:
            config, source, said = cli.config_for_resume(args.workdir, overrides)
        if args.print_config:
            if said:
                print(said, file=sys.stderr)
            print(configuration.to_json(config))
            from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

            # What a run would refuse at its start, said after the config
            # (ConfigError: `error: ...` on stderr, exit status 2).
            trainer.check_config(config)
            return
        # Must precede any other use of JAX.
        from jaxdistill import sharding  # pylint: disable=g-import-not-at-top

        sharding.maybe_initialize_distributed(config.get('distributed'))
        from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

        import jax  # pylint: disable=g-import-not-at-top

        if said and jax.process_index() == 0:
            # A busy workdir is refused before the line says it resumes. With
            # several processes the refusal comes from the Trainer, in every
            # process at once (process 0 stopping alone here would leave the
            # others waiting for it); the line is left out.
            held = workdir_lock.holder(args.workdir)
            if held and jax.process_count() == 1:
                raise workdir_lock.in_use_error(args.workdir, held['text'])
            if not held:
                print(said, flush=True)
        trainer.train_and_evaluate(config, args.workdir, source=source)

    return cli.main_guard(run, workdir=args.workdir)


if __name__ == '__main__':
    hostmem.reexec_with_huge_pages()
    cli.exit_process(main())
