"""`python -m jaxdistill.train --config configs/X.py[:arg] --workdir DIR`.

Trains the method and task the config names; restarts from the latest
checkpoint in DIR automatically. Override any field: `--config.a.b=value`.
`--print_config` prints the config as the file and the overrides make it,
and exits.
"""

import sys

from jaxdistill import cli
from jaxdistill import configuration
from jaxdistill import hostmem


def main(argv=None) -> int:
    cli.quiet_tensorflow()
    args, overrides = cli.parse(
        sys.argv[1:] if argv is None else argv,
        'train',
        __doc__,
        with_print_config=True,
    )

    def run():
        config = cli.load(args, overrides)
        if args.print_config:
            print(configuration.to_json(config))
            return
        # Must precede any other use of JAX.
        from jaxdistill import sharding  # pylint: disable=g-import-not-at-top

        sharding.maybe_initialize_distributed(config.get('distributed'))
        from jaxdistill import trainer  # pylint: disable=g-import-not-at-top

        trainer.train_and_evaluate(config, args.workdir)

    return cli.main_guard(run)


if __name__ == '__main__':
    hostmem.reexec_with_huge_pages()
    sys.exit(main())
