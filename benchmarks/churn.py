"""Prediction churn between two trained single-model workdirs.

    python benchmarks/churn.py WORKDIR_A WORKDIR_B

Loads each run's latest checkpoint with its own config, predicts the eval
split (teacher-forced argmax per target token, `task.predict`), and prints
the fraction of valid tokens where the two disagree (last line).
"""

import argparse
import json
import pathlib

import ml_collections

from jaxdistill import optim
from jaxdistill import trainer as trainer_lib


def predictions(workdir):
    config = ml_collections.ConfigDict(
        json.loads((pathlib.Path(workdir) / 'config.json').read_text())
    )
    t = trainer_lib.Trainer(config, str(workdir), read_only=True)
    models = t.method.eval_models(optim.model_params(t.state), t.state.extra)
    return t.task.predict(next(iter(models.values())))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('workdir_a', help='a finished training run')
    parser.add_argument('workdir_b', help='another, of the same task')
    args = parser.parse_args()
    a, b = args.workdir_a, args.workdir_b
    agreement = trainer_lib.agreement_metrics(
        {'a': predictions(a), 'b': predictions(b)}
    )
    print(agreement['eval/churn'])


if __name__ == '__main__':
    from jaxdistill import hostmem  # pylint: disable=g-import-not-at-top

    hostmem.reexec_with_huge_pages()
    main()
