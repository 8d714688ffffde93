"""The training loop: one for every task and method.

`train_and_evaluate(config, workdir)` builds the task (data + model), the
method and the optimizer from the config, restores the latest checkpoint in
`workdir` if there is one (parameters, optimizer, method state, RNG and data
position, so a resumed run is bitwise identical to an uninterrupted one on
CPU), then trains with periodic logging, evaluation and checkpoints.
"""

import contextlib
import json
import math
import os
import signal
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from jaxdistill import checkpoint as checkpoint_lib
from jaxdistill import cli
from jaxdistill import compile_cache
from jaxdistill import configuration
from jaxdistill import contracts
from jaxdistill import interrupts
from jaxdistill import metrics as metrics_lib
from jaxdistill import optim
from jaxdistill import process_check
from jaxdistill import registry
from jaxdistill import sharding as sharding_lib
from jaxdistill import train_step as train_step_lib
from jaxdistill import workdir_lock
from jaxdistill.data import tokenizer as tokenizer_lib
from jaxdistill import tasks  # noqa: F401  (registers the tasks)
from jaxdistill.errors import (
    CheckpointMismatchError,
    ConfigError,
    DataError,
    JaxdistillError,
    NonFiniteLossError,
)
from jaxdistill.methods import make_method
from jaxdistill.methods.base import check_method_config

# Config keys that must not change between a checkpoint and its resumption.
RESUME_KEYS = (
    'task',
    'model',
    'method.name',
    'method.num_replicas',  # Codistillation: the stacked replicas.
    'data.source',
    'data.pairs',
    'data.vocab_size',
    'data.min_count',  # MT2ST: the word vocabulary.
    'data.tokenizer',
    'mesh.shard_params',
    'optimizer.name',
)
# Keys under RESUME_KEYS that only choose the starting point, which the
# checkpoint replaces: they may change (a vectors file moved or removed).
RESUME_FREE = ('model.init_vectors',)
# Keys among those added later, with the value runs saved before them used.
RESUME_DEFAULTS = {
    'model.dropout_mask_bits': 32,  # flax.linen.Dropout's masks.
    'model.norm_position': 'pre',
    'model.dtype': 'float32',
}


# The progress line shows the host's share of the step time spent on input
# (`train/input_fraction`) from this much on.
_SHOW_INPUT_FRACTION = 0.2


def say(*args):
    """Progress output, from process 0 only."""
    if jax.process_index() == 0:
        print(*args, flush=True)


def _replica_layout(config, mesh) -> str:
    """', N replicas: ...' for stacked methods: how they share the devices."""
    n = config.method.get('num_replicas', 0)
    if not n:
        return ''
    groups = mesh.shape['replica']
    size = _plural(mesh.devices.size // groups, 'device')
    if groups == n:
        return f', {n} replicas: one per device group of {size}'
    return (
        f', {n} replicas: {n // groups} stacked per device group '
        f'({_plural(groups, "group")} of {size})'
    )


def _microbatch_note(config) -> str:
    k = config.get('microbatches', 1)
    if k == 1:
        return ''
    return f', each batch in {k} micro-batches (gradients accumulated)'


def _finite_nonnegative(value) -> bool:
    """Whether a config value is a finite number >= 0 (not a bool)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


# Keys the spine reads from every config (a config of one's own that does not
# build on the library's bases may lack one: named, not a KeyError).
REQUIRED_KEYS = (
    'task',
    'seed',
    'num_train_steps',
    'log_every_steps',
    'model',
    'method.name',
    'optimizer',
    'data',
    'eval.every_steps',
    'checkpoint.every_steps',
    'checkpoint.keep',
    'checkpoint.async_save',
    'mesh.model_axis_size',
    'mesh.shard_params',
)


# The keys the spine reads, by group ('' is the top level): a config file's
# key outside them is a typo or a setting nothing uses (check_config). The
# task adds its own `data` and `eval` keys (its `config_keys`); `model` and
# `method` are checked against the model's and the method's fields.
SPINE_KEYS = {
    '': frozenset(
        {
            'task',
            'seed',
            'num_train_steps',
            'log_every_steps',
            'time_limit_minutes',
            'microbatches',
            'profile_steps',
            'imports',
            'compilation_cache_dir',
            'model',
            'method',
            'optimizer',
            'data',
            'eval',
            'checkpoint',
            'mesh',
            'distributed',
        }
    ),
    'checkpoint': frozenset(
        {
            'every_steps',
            'keep',
            'async_save',
            'best_metric',
            'best_mode',
            'patience',
            'min_delta',
        }
    ),
    'mesh': frozenset({'model_axis_size', 'shard_params', 'replica_axis_size'}),
    'distributed': frozenset({'coordinator_address', 'num_processes', 'process_id'}),
    'optimizer': optim.KEYS,
    'eval': frozenset(
        {'every_steps', 'at_end', 'batch_size', 'max_examples', 'use_ema'}
    ),
}


def check_keys(config, task) -> None:
    """ConfigError for the first key of `config` that no code reads (e.g.
    `data.sourse` written in a config file; overrides are checked as they
    are applied). `data` and `eval` are checked where the task names its
    keys (`task.config_keys`, a dict of group -> keys; a task of your own
    without one leaves them unchecked)."""
    own = getattr(task, 'config_keys', {})
    for group in ('', 'checkpoint', 'mesh', 'distributed', 'optimizer', 'data', 'eval'):
        valid = SPINE_KEYS.get(group, frozenset()) | own.get(group, frozenset())
        if group in ('data', 'eval') and group not in own:
            continue
        cfg = config.get(group) if group else config
        if isinstance(cfg, ml_collections.ConfigDict):
            configuration.check_known_keys(
                group,
                cfg,
                valid,
                owner=f'task {config.task!r}' if group in ('data', 'eval') else '',
            )


def _check_loop_settings(config):
    """ConfigError naming the first key the spine needs and the config
    lacks, or the first step count the training loop cannot use."""
    try:
        configuration.require(config, *REQUIRED_KEYS)
    except ConfigError as e:
        raise ConfigError(
            f'{e} (configs/spine.py and the task bases in configs/ set every '
            'key the spine reads: build your config on one of them)'
        ) from None
    c = config
    configuration.check_counts(
        ('num_train_steps', c.num_train_steps, 1),
        ('seed', c.seed, 0),  # The data's shuffles seed numpy, which wants >= 0.
        ('log_every_steps', c.log_every_steps, 1),
        ('checkpoint.every_steps', c.checkpoint.every_steps, 1),
        ('checkpoint.keep', c.checkpoint.keep, 0),  # 0: keep every checkpoint.
        ('eval.every_steps', c.eval.every_steps, 0),
        ('microbatches', c.get('microbatches', 1), 1),
        ('profile_steps', c.get('profile_steps', 0), 0),
        ('checkpoint.patience', c.checkpoint.get('patience', 0), 0),
    )
    best, mode = (
        c.checkpoint.get('best_metric', ''),
        c.checkpoint.get('best_mode', 'max'),
    )
    if not isinstance(best, str):
        raise ConfigError(
            f'checkpoint.best_metric={best!r} must be the name of a logged '
            "evaluation metric, e.g. 'eval/bleu' ('' for none)."
        )
    if best and not best.startswith('eval/'):
        raise ConfigError(
            f'checkpoint.best_metric={best!r} must name an evaluation metric, '
            "'eval/...' (e.g. 'eval/bleu', 'eval/loss'): only evaluations rank "
            'checkpoints.'
        )
    if mode not in ('max', 'min'):
        raise ConfigError(f"checkpoint.best_mode={mode!r} must be 'max' or 'min'.")
    if best and not c.eval.every_steps and not c.eval.get('at_end', True):
        raise ConfigError(
            f'checkpoint.best_metric={best!r} ranks evaluated checkpoints, but '
            'this run never evaluates (eval.every_steps=0, eval.at_end=False).'
        )
    patience = c.checkpoint.get('patience', 0)
    if patience and not best:
        raise ConfigError(
            f'checkpoint.patience={patience} stops training once '
            'checkpoint.best_metric stops improving, but no best_metric is set '
            '(e.g. --config.checkpoint.best_metric=eval/bleu).'
        )
    if patience and not c.eval.every_steps:
        raise ConfigError(
            f'checkpoint.patience={patience} counts evaluations, but this run '
            'evaluates only at its end (eval.every_steps=0).'
        )
    delta = c.checkpoint.get('min_delta', 0.0)
    if not _finite_nonnegative(delta):
        raise ConfigError(
            f'checkpoint.min_delta={delta!r} must be a number >= 0: how much '
            'checkpoint.best_metric must improve by to count as an improvement.'
        )
    if delta and not patience:
        raise ConfigError(
            f'checkpoint.min_delta={delta!r} is the improvement that resets '
            'early stopping, but checkpoint.patience is 0 (no early stopping); '
            'set both (e.g. --config.checkpoint.patience=5).'
        )
    limit = c.get('time_limit_minutes', 0.0)
    if not _finite_nonnegative(limit):
        raise ConfigError(
            f'time_limit_minutes={limit!r} must be a finite number of minutes '
            '>= 0 (0: no limit).'
        )


# Evaluation settings that say when to evaluate, not what: changing them
# does not make a logged evaluation stale.
_EVAL_SCHEDULE = ('eval.every_steps', 'eval.at_end')


def _saved_config(workdir) -> dict | None:
    """The config.json a previous run left in `workdir`, if any."""
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
        return None
    return configuration.read_saved(path)


def _check_stage(method, model_fns, config, workdir, step: int) -> bool:
    """ConfigError if `config` would take the run restored at `step` back to
    an earlier stage of its method than the saved config had reached (a
    boundary such as TSJT's stage2_start, tied to num_train_steps, that a
    longer run moved past the restored step). True if it moves the run on
    to a later stage than the saved config had (a boundary moved before the
    restored step), False otherwise."""
    saved = _saved_config(workdir)
    if not saved or not isinstance(saved.get('method'), dict):
        return False
    try:
        before = make_method(ml_collections.ConfigDict(saved['method']), model_fns)
        reached = before.stage(step)
    except Exception:  # pylint: disable=broad-except
        return False  # A config of older code: nothing to compare against.
    now = method.stage(step)
    if now >= reached:
        return now > reached
    current = json.loads(configuration.to_json(config))['method']
    changed = {
        k: v for k, v in saved['method'].items() if current.get(k, '<absent>') != v
    }
    fix = ' '.join(
        f'--config.method.{k}={v!r}'
        if isinstance(v, str)
        else f'--config.method.{k}={v}'
        for k, v in changed.items()
        if not isinstance(v, (dict, list))
    )
    raise ConfigError(
        f'{workdir}: at step {step} this run is in stage {reached} of method '
        f'{config.method.name!r} (phase {before.phase(step)!r}); this config '
        f'would take it back to stage {now} (phase {method.phase(step)!r}). '
        'Changed since it was saved: '
        + '; '.join(
            f'method.{k}: {v!r} -> {current.get(k, "<absent>")!r}'
            for k, v in changed.items()
        )
        + '. Keep the saved values'
        + (f' ({fix})' if fix else '')
        + ', or use a new --workdir.'
    )


def _check_config_compatible(config, workdir):
    """Compares `config` to the one a previous run left (config.json).

    Only a run with a checkpoint is held to it: the config.json of a start
    that stopped before its first (killed, or failing in its first step: a
    model too large for the device, say) records nothing trained, and a
    corrected config starts anew there, with a note.
    """
    saved = _saved_config(workdir)
    if saved is None:
        return
    current = json.loads(configuration.to_json(config))
    diffs = configuration.compare_for_resume(
        saved, current, RESUME_KEYS, RESUME_DEFAULTS, free=RESUME_FREE
    )
    if diffs and not cli.has_checkpoint(workdir):
        say(
            f'Note: {os.path.join(workdir, "config.json")} is from an earlier '
            'start that saved no checkpoint; this one starts anew with its '
            f'own config (changed: {"; ".join(diffs)}).'
        )
        return
    if diffs:
        raise CheckpointMismatchError(
            f'{workdir} holds a run with an incompatible config '
            f'({os.path.join(workdir, "config.json")}); changed: '
            + '; '.join(diffs)
            + '. Use a new --workdir, or restore those values.'
        )


def _write_json(path, text):
    with open(path + '.tmp', 'w', encoding='utf-8') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def _write_config(config, workdir, source):
    """config.json: written once the run is known to start or resume, so a
    refused config never replaces the record of the run in the workdir.

    With it `SOURCE_FILE`: the config file and overrides that made `config`
    (`source`, from the CLI), so `train --workdir DIR` alone can make it again
    with its linked fields. A run given its config some other way (`source`
    None, e.g. a script calling `Trainer`) removes an earlier one, which no
    longer describes the run.
    """
    if jax.process_index() != 0:
        return
    _write_json(os.path.join(workdir, 'config.json'), configuration.to_json(config))
    record = os.path.join(workdir, configuration.SOURCE_FILE)
    if source is not None:
        _write_json(record, json.dumps(source, indent=2))
    elif os.path.exists(record):
        os.remove(record)


# Written when an error ends a run's training loop, removed when a run
# starts in the workdir again: `jaxdistill.runs` tells a failed run from one
# that was stopped.
ERROR_FILE = 'error.json'


def _record_error(workdir: str, error: Exception):
    if jax.process_index() != 0:
        return
    record = {
        'time': time.time(),
        'error': type(error).__name__,
        'message': str(error)[:4000],
    }
    try:
        _write_json(os.path.join(workdir, ERROR_FILE), json.dumps(record, indent=2))
    except OSError as e:  # Never hides the error itself.
        logging.warning('could not record the error in %s: %s', workdir, e)


def _clear_error(workdir: str):
    path = os.path.join(workdir, ERROR_FILE)
    if jax.process_index() == 0 and os.path.exists(path):
        os.remove(path)


def _changed_settings(config, workdir, new: bool = True) -> list[str]:
    """'key: saved -> current' for every setting that differs from the run in
    `workdir` (any key, not only RESUME_KEYS); [] if none or no saved
    config. `new=False` leaves out keys the saved config lacks (added to the
    library's configs since it was written)."""
    saved = _saved_config(workdir)
    if saved is None:
        return []
    current = json.loads(configuration.to_json(config))
    sections = tuple(set(saved) | set(current))
    return configuration.compare_for_resume(
        saved, current, sections, RESUME_DEFAULTS, added=new
    )


def _feed_own_rows(batches) -> bool:
    """With several processes, tells the task's batcher to build only this
    process's rows of each batch (where it can: `set_part`); True if so.
    A batcher without `set_part` (a task of your own) builds the global batch
    and each process sends its slice of it, as with one process."""
    if jax.process_count() == 1 or not hasattr(batches, 'set_part'):
        return False
    batches.set_part(jax.process_index(), jax.process_count())
    return True


def _feeding_note(own_rows: bool) -> str:
    if jax.process_count() == 1:
        return ''
    if own_rows:
        return ', each building only its own rows of every batch'
    return ', each building every batch whole and sending its own rows'


def _resume_position(meta: dict, batches, *, note: bool = True) -> dict:
    """The checkpoint's data position, carried over to this run's batching.

    Batches hold a multiple of the devices' (and replicas') rows, so on a
    different device count an epoch has other batches (and another order).
    Then training continues at the same fraction of the epoch in the new
    batching, and a note says the data order differs from an unbroken run's.
    """
    pos = meta['data_position']
    before, now = meta.get('batches_per_epoch'), batches.batches_per_epoch()
    if before is None or before == now:
        return pos
    if set(pos) == {'epoch', 'index'}:
        pos = {'epoch': pos['epoch'], 'index': pos['index'] * now // before}
    elif set(pos) == {'step'}:
        epoch, index = divmod(pos['step'], before)
        pos = {'step': epoch * now + index * now // before}
    if not note:  # Evaluation only: no training continues.
        return pos
    devices = meta.get('devices')
    if devices == jax.device_count():
        # Same devices: the data (other files in its folder) or the
        # settings that batch it changed.
        why = (
            f'the checkpoint was written with {before} batches an epoch and '
            f'this run has {now}, on the same {_plural(devices, "device")}: '
            'the training data or its batching settings changed.'
        )
    else:
        written = (
            _plural(devices, 'device') if isinstance(devices, int) else '? devices'
        )
        why = (
            f'the checkpoint was written on {written} with {before} batches an '
            f'epoch; this run has {jax.device_count()} and {now}.'
        )
    say(
        f'Note: {why} Training continues from the same step and parameters, '
        'at the same point of the epoch, but the data order from here differs '
        'from an unbroken run.'
    )
    return pos


def _plural(n: int, noun: str) -> str:
    return f'{n} {noun}' + ('' if n == 1 else 'es' if noun.endswith('s') else 's')


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f'{h}h{m:02d}m{s:02d}s' if h else f'{m}m{s:02d}s'


# Steps the host may dispatch ahead of the devices. Without a bound the host
# runs ahead by a whole log window; on 8 fake CPU devices (2 cores, jax 0.10)
# a window of 100 unsynchronised steps deadlocked XLA's CPU collectives right
# after the window (the process hung, or aborted after 40 s with "only 7 of
# them arrived on time"); windows of 30 never did, nor 100 with this bound.
_MAX_IN_FLIGHT = 16


def _addressable(x):
    """Metrics sharded over other processes' devices, gathered to this one."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return multihost_utils.process_allgather(x, tiled=True)
    return x


def _mean_metrics(history: list[dict]) -> dict:
    """Averages a window of per-step aux dicts (one device_get for all).

    Keys ending in 'tokens' are summed. A vector metric (one value per
    replica) is reported as its mean plus one key per replica: 'name/r0', ...
    A key that only some of the window's steps report (a window across a
    phase change: codistillation's burn-in has no 'train/distill') is
    averaged over the steps that report it; a replica's value over the steps
    where its block held tokens ('train/tokens' per replica).
    """
    history = jax.device_get(jax.tree.map(_addressable, history))
    out = {}
    keys = dict.fromkeys(k for h in history for k in h)  # In order, once.
    for key in keys:
        steps = [h for h in history if key in h]
        values = np.array([h[key] for h in steps], dtype=np.float64)
        if key.endswith('tokens'):
            out[key] = float(np.sum(values))
            per = np.sum(values, axis=0) if values.ndim == 2 else None
        else:
            # A replica whose block of a step held no tokens (the all-PAD
            # rows that fill a bucket's last batch land in the last block)
            # reports 0 for that step: not a loss, so not averaged in.
            held = np.ones(values.shape, bool)
            if values.ndim == 2 and all('train/tokens' in h for h in steps):
                tokens = np.array([h['train/tokens'] for h in steps], np.float64)
                if tokens.shape == values.shape:
                    held = tokens > 0
                    held[:, ~held.any(axis=0)] = True  # None at all: as they are.
            out[key] = float(np.mean(values[held]))
            per = (
                np.sum(np.where(held, values, 0.0), axis=0) / np.sum(held, axis=0)
                if values.ndim == 2
                else None
            )
        if per is not None and values.shape[1] > 1:
            for r, v in enumerate(per):
                out[f'{key}/r{r}'] = float(v)
    return out


def agreement_metrics(predictions: dict) -> dict:
    """Pairwise agreement of models' predictions (task.predict output).

    Each value is (predicted labels [N] int, valid mask [N] bool). Agreement
    is the fraction of valid positions where two models predict the same
    label; churn (Anil et al.) is 1 - agreement.
    """
    names = list(predictions)
    out = {}
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            (pa, valid), (pb, _) = predictions[names[a]], predictions[names[b]]
            agree = float(np.mean(pa[valid] == pb[valid]))
            out[f'eval/agreement_{names[a]}_{names[b]}'] = agree
    if out:
        out['eval/churn'] = 1.0 - float(np.mean(list(out.values())))
    return out


@jax.jit
def _all_finite(params) -> jax.Array:
    """Whether every floating-point entry of `params` is finite (one scalar
    leaves the devices)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(params)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _non_finite_part(state) -> str:
    """Names what of `state` holds a non-finite value: 'parameters', or the
    method state's entries ("method state 'policy'")."""
    if not bool(_all_finite(state.params)):
        return 'parameters'
    extra = state.extra if isinstance(state.extra, dict) else {'': state.extra}
    bad = [k for k, v in extra.items() if not bool(_all_finite(v))]
    return 'method state ' + ', '.join(repr(k) for k in bad)


def _inert_settings(config, data_summary: dict) -> list[str]:
    """Settings that the run's length leaves without effect: a codistillation
    burn-in that never ends, a TSJT stage 2 or an RL policy that never starts,
    an auxiliary task switched off after the end."""
    total, notes, m = config.num_train_steps, [], config.method
    burn_in = m.get('burn_in_steps', 0)
    if m.name == 'codistill' and burn_in >= total:
        notes.append(
            f'method.burn_in_steps={burn_in} >= num_train_steps={total}: the '
            'replicas never distil (each trains alone).'
        )
    if m.name == 'tsjt' and m.get('stage2_start', 0) >= total:
        notes.append(
            f'method.stage2_start={m.stage2_start} >= num_train_steps={total}: '
            'stage 2 never runs (nothing is distilled into the smaller '
            'capacities).'
        )
    warmup = m.get('warmup_steps', 0)
    if (
        m.name == 'rl_multi_teacher'
        and m.get('weighting') != 'equal'
        and warmup >= total
    ):
        notes.append(
            f'method.warmup_steps={warmup} >= num_train_steps={total}: the '
            'teacher-selection policy never runs (every step weights the '
            'teachers equally).'
        )
    for key, step in data_summary.items():
        if key.endswith('_off_step') and step > total:
            notes.append(
                f'the auxiliary task {key[: -len("_off_step")]!r} would switch off '
                f'at step {step}, after num_train_steps={total}: it never does.'
            )
    return notes


def _selection_on_test(config) -> list[str]:
    """A note when checkpoint.best_metric (and with it early stopping)
    ranks evaluations of a split named as test data: the kept best step is
    then chosen on it, and its score there is no held-out estimate."""
    best = config.checkpoint.get('best_metric', '')
    if not best:
        return []
    d, e = config.get('data', {}), config.get('eval', {})
    splits = e.get('splits', None)
    if splits:  # eval/SPLIT/NAME, and eval/accuracy, eval/loss of the first.
        parts, key = best.split('/'), 'eval.splits'
        if len(parts) > 2 and parts[1] in splits:
            split = parts[1]
        elif best in ('eval/accuracy', 'eval/loss'):
            split = splits[0]
        else:
            return []  # Not a split's (word similarity, say).
    else:
        split, key = d.get('eval_split', ''), 'data.eval_split'
    if not isinstance(split, str) or not split.lower().startswith('test'):
        return []
    stop = config.checkpoint.get('patience', 0)
    return [
        f'checkpoint.best_metric={best!r} ranks evaluations of the {split!r} '
        f'split ({key}): the best checkpoint'
        + (' and the early stop are' if stop else ' is')
        + ' chosen on it, so its score there is not a held-out one. Rank a '
        'validation split to report test scores.'
    ]


class _Abandoned(BaseException):
    """An evaluation abandoned by a stop signal (`_StopSignals.abandonable`).
    A BaseException, as KeyboardInterrupt is: no `except Exception` on the
    way up catches it."""


class _StopSignals:
    """While entered, SIGINT and SIGTERM ask the training loop to stop at the
    end of its current step (it saves that step); a second signal interrupts
    at once. Signals are handled in the main thread only.

    With several processes a checkpoint needs all of them at the same step.
    There SIGTERM (a scheduler's preemption notice) reaches JAX's preemption
    notifier, which `jax.distributed.initialize` starts: the notice goes to
    every process, they agree on a step a little ahead
    (`multihost_utils.reached_preemption_sync_point`, asked once a step), and
    all stop after it and save it. A first SIGINT (Ctrl-C) is passed to the
    notifier as a SIGTERM to this process, so it stops the run the same way;
    a second one interrupts at once.

    Inside `abandonable()` (an evaluation) the first signal also abandons
    the work at once, by raising `_Abandoned`: the loop then saves and stops
    without waiting for an evaluation that a scheduler's SIGKILL, a grace
    period after its SIGTERM, could cut short. With several processes
    nothing is abandoned: the processes would go out of step.
    """

    def __init__(self):
        self.caught = ''
        self._previous = {}
        self._sync = jax.process_count() > 1
        self._sigint = False  # Several processes: a SIGINT passed on.
        self._abandonable = False
        # Signals `interrupts.deliver` sends again (it could not raise where
        # the first one landed): they carry on the first, not a second.
        self._resent = 0

    @contextlib.contextmanager
    def abandonable(self):
        """While inside, the first SIGINT or SIGTERM raises `_Abandoned`;
        one caught before raises it on entry."""
        if self._sync or threading.current_thread() is not threading.main_thread():
            yield
            return
        if self.caught:
            raise _Abandoned(self.caught)
        self._abandonable = True
        try:
            yield
        finally:
            self._abandonable = False

    def check(self, step: int) -> str:
        """The signal that stops the loop before step `step` + 1 ('' none).
        Called before every step, with the steps finished so far."""
        if self.caught or not self._sync:
            return self.caught
        try:
            if multihost_utils.reached_preemption_sync_point(step):
                self.caught = 'SIGINT' if self._sigint else 'SIGTERM'
        except RuntimeError as e:  # The preemption service is off.
            logging.warning('Preemption notices cannot be synchronised: %s', e)
            self._sync = False
        return self.caught

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        # A SIGINT the process was started ignoring (a job a script put in
        # its background) stays ignored, as `interrupts.install` leaves it.
        sigint = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        if self._sync:  # SIGTERM stays with JAX's notifier.
            if sigint:
                self._previous[signal.SIGINT] = signal.signal(
                    signal.SIGINT, self._handle_several
                )
        else:
            for sig in (signal.SIGINT, signal.SIGTERM) if sigint else (signal.SIGTERM,):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle_several(self, signum, frame):
        if self._sigint:  # The second one: stop now.
            interrupts.interrupt(signum, frame, signal.Signals(signum).name)
            return
        self._sigint = True
        os.write(
            2,
            b'\nSIGINT: all processes will stop after the same step and save it '
            b'(again to stop at once).\n',
        )
        os.kill(os.getpid(), signal.SIGTERM)  # To JAX's preemption notifier.

    def _handle(self, signum, frame):
        if self._resent:  # The first one, sent again by `_abandon`.
            self._resent -= 1
            if self._abandonable:
                self._abandon(signum, frame)
            return
        if self.caught:  # The second one: stop now.
            interrupts.interrupt(signum, frame, signal.Signals(signum).name)
            return
        self.caught = signal.Signals(signum).name
        # os.write: print() may be mid-write in the interrupted frame.
        os.write(
            2,
            (
                f'\n{self.caught}: abandoning the evaluation, saving and stopping '
                if self._abandonable
                else f'\n{self.caught}: saving after the current step '
            ).encode()
            + b'(again to stop at once).\n',
        )
        if self._abandonable:
            self._abandon(signum, frame)

    def _abandon(self, signum, frame):
        interrupts.deliver(signum, frame, _Abandoned(self.caught))
        self._resent += 1  # Not raised here: it is sent again.

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class _Profiler:
    """A `jax.profiler` trace of `num_steps` steps into DIR/profile.

    It starts after the run's first log line, when the first batch shapes
    have compiled, so the trace shows steps rather than compilation; it
    stops once the last traced step has finished on the devices, or when
    the loop ends first. Each process writes its own trace.
    """

    def __init__(self, workdir: str, num_steps: int):
        self.directory = os.path.join(workdir, 'profile')
        self.num_steps, self.first, self.last = num_steps, None, None
        self.active = False

    def after_log(self, step: int):
        if self.num_steps and self.first is None:
            jax.profiler.start_trace(self.directory)
            self.first, self.active = step + 1, True

    def after_step(self, step: int, aux):
        if self.active:
            self.last = step
            if step - self.first + 1 >= self.num_steps:
                self.stop(aux)

    def stop(self, aux=None, quiet: bool = False):
        if not self.active:
            return
        self.active = False
        if not quiet:
            jax.block_until_ready(aux)
        jax.profiler.stop_trace()
        if not quiet and self.last is not None:
            say(
                f'Profile of steps {self.first}-{self.last} in {self.directory} '
                "(TensorBoard's profile plugin; or its .xplane.pb in XProf)."
            )


class _EarlyStop:
    """Early stopping on `checkpoint.best_metric`, `checkpoint.patience`
    evaluations after its last improvement.

    An evaluation improves on the best so far if its value is higher than
    the best by more than `min_delta` (`best_mode='max'`), or lower by more
    than that ('min'); with `min_delta=0` any strict improvement counts. A
    NaN never improves, not even on no value at all. The record (best step
    and value, evaluations since) travels in every checkpoint's meta, so a
    resumed run counts on from where its checkpoint left off, and a run that
    stopped early stays stopped when started again with the same patience.
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        patience: int,
        saved=None,
        min_delta: float = 0.0,
    ):
        self.metric, self.mode, self.patience = metric, mode, int(patience)
        self.min_delta = float(min_delta)
        saved = saved or {}
        if (saved.get('metric'), saved.get('mode')) != (metric, mode):
            saved = {}  # Another metric ranked the saved run: count afresh.
        self.best_step = saved.get('best_step')
        self.best_value = saved.get('best_value')
        self.since = int(saved.get('evals_since_best', 0))

    def improves(self, value: float) -> bool:
        """Whether `value` improves on the best so far by more than min_delta."""
        if math.isnan(value):
            return False
        best = self.best_value
        if best is None:
            return True
        if self.mode == 'max':
            return value - self.min_delta > best
        return value + self.min_delta < best

    def record(self, step: int, value: float, *, counts: bool = True):
        """Counts the evaluation at `step` that gave `value`. `counts` False
        (a stage of the method before its last): it may set the best, but
        does not use up patience."""
        if self.improves(value):
            self.best_step, self.best_value, self.since = step, float(value), 0
        elif counts:
            self.since += 1

    @property
    def spent(self) -> bool:
        """True once `patience` evaluations have passed without improvement."""
        return self.patience > 0 and self.since >= self.patience

    def meta(self) -> dict:
        return {
            'metric': self.metric,
            'mode': self.mode,
            'min_delta': self.min_delta,
            'best_step': self.best_step,
            'best_value': self.best_value,
            'evals_since_best': self.since,
        }

    def message(self, step: int, kept: int | None = None) -> str:
        """`kept`: the step of the checkpoint kept as the best. Orbax ranks a
        tie with the best as the best and keeps the later step, and ranks
        without `min_delta`, so it need not be `best_step`."""
        rule = f'checkpoint.patience={self.patience}'
        if self.min_delta:
            rule += f', checkpoint.min_delta={self.min_delta:g}'
        waited = _plural(self.since, 'evaluation')
        if self.best_value is None:
            return (
                f'Early stop: {self.metric} was NaN in every one of {waited} '
                f'({rule}); stopped at step {step}.'
            )
        kept = self.best_step if kept is None else kept
        return (
            f'Early stop: {self.metric} has not improved on {self.best_value:.4g} '
            f'(step {self.best_step}) in {waited} ({rule}); stopped at step '
            f'{step}. The best checkpoint kept is step {kept} (--step {kept} or '
            '--step best for evaluate, translate and extract).'
        )


def check_config(config) -> None:
    """ConfigError (or PluginError) for what a run of `config` would refuse
    at its start and can be told without data or devices: the keys the spine
    reads, the loop's counts, the method's options (up to those that need
    the model: `methods.base.check_method_config`), the task's own
    `check_config(config)` where it has one (lengths, sizes, the model's
    fields), and the optimizer's settings (building it reads nothing).
    `python -m jaxdistill.sweep` runs it on every combination before
    anything trains."""
    registry.import_plugins(config.get('imports', ()))
    _check_loop_settings(config)
    task = registry.get('task', config.task)
    check_keys(config, task)
    optim.make_optimizer(config.optimizer)
    check_method_config(config.method)
    if hasattr(task, 'check_config'):
        task.check_config(config)


def _window(clock, window_start: float, history) -> tuple[float, float, float]:
    """Times a log window once its last step has run (compute, not dispatch).

    -> (seconds stepping, compilation left out; seconds compiling; now).
    """
    jax.block_until_ready(history[-1])
    now = time.time()
    compiling = clock.seconds(window_start, now)
    return max(now - window_start - compiling, 1e-6), compiling, now


def _reading_layout(model_axis, replicas) -> tuple[int, int]:
    """(mesh.model_axis_size, mesh.replica_axis_size) for a read-only
    Trainer (`evaluate`; `extract` and `translate` build no mesh from the
    run's config): the run's own where these devices allow them, else the
    largest model axis dividing both (the state is restored into whichever
    layout), and replicas laid out automatically, with a note. A run
    trained with a model axis of 8 GPUs is then evaluated on one."""
    n, local = jax.device_count(), jax.local_device_count()
    fits = lambda m: not n % m and (local == n or not local % m)
    if isinstance(model_axis, int) and model_axis > 1 and not fits(model_axis):
        smaller = max(d for d in range(1, model_axis) if fits(d) and not model_axis % d)
        say(
            f'Note: the run has mesh.model_axis_size={model_axis}, which does not '
            f'divide these {n} devices; it is read with {smaller}.'
        )
        model_axis = smaller
    if isinstance(replicas, int) and replicas > 0 and n % (model_axis * replicas):
        say(
            f'Note: the run has mesh.replica_axis_size={replicas}, which these '
            f'{n} devices cannot hold; its replicas are laid out automatically.'
        )
        replicas = 0
    return model_axis, replicas


class Trainer:
    """Holds what one run needs; `run()` trains to `config.num_train_steps`.

    A Trainer that writes (not `read_only`) holds the workdir's lock
    (`workdir_lock`) from its construction until `run()` ends or `close()`;
    another in the same workdir meanwhile is refused.
    """

    def __init__(
        self,
        config,
        workdir: str,
        *,
        restore_step: int | None = None,
        read_only: bool = False,
        source: dict | None = None,
    ):
        self.created = time.time()  # `time_limit_minutes` counts from here.
        # The early-exit curve of the last evaluation's first model (multi-exit
        # models; [] otherwise), and that model's name ('' for a run of one).
        self.last_curve, self.last_curve_model = [], ''
        self.config, self.workdir = config, workdir
        # Plugins first (check_config imports them): they register the
        # methods, models or tasks named below.
        # Paths as config.json will name them for a resume, evaluate or
        # translate from any folder: relative ones from this one (`train`
        # has resolved those a resumed run recorded from the folder it
        # started in).
        configuration.absolute_paths(config, os.getcwd())
        check_config(config)  # Before any data loads.
        cli.check_local(workdir)
        cli.make_folder(workdir, '--workdir', writes=not read_only)
        process_check.check(config, workdir, writes=not read_only)
        self._lock = None if read_only else workdir_lock.lock_workdir(workdir)
        try:
            self._setup(config, workdir, restore_step, read_only, source)
        except BaseException:
            self.close()
            raise

    def _release_lock(self):
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self):
        """Ends a Trainer that will not `run()` (a Trainer runs once; `run()`
        ends it itself): waits for a checkpoint being written, closes the
        logs, releases the workdir."""
        if getattr(self, 'ckpt', None) is not None:
            self._close_quietly()
        if getattr(self, 'writer', None) is not None:
            self.writer.close()
        self._release_lock()

    def _use_compile_cache(self):
        """Points the process's compilation cache (one jax.config setting)
        at this run's: another Trainer made meanwhile in the process (a
        read-only one evaluating another run) points it at its own."""
        compile_cache.use(
            self.config.get('compilation_cache_dir', 'auto'),
            self.workdir,
            read_only=self._read_only,
        )

    def _setup(self, config, workdir, restore_step, read_only, source):
        _check_config_compatible(config, workdir)
        self._read_only = read_only
        self._use_compile_cache()
        model_axis = config.mesh.model_axis_size
        replicas = config.mesh.get('replica_axis_size', 0)
        if read_only:
            model_axis, replicas = _reading_layout(model_axis, replicas)
        self.mesh = sharding_lib.make_mesh(
            model_axis,
            replica_axis_size=sharding_lib.replica_axis_size(
                config.method.get('num_replicas', 1),
                replicas,
                devices=jax.device_count(),
                model_axis_size=model_axis,
            ),
        )
        with tokenizer_lib.existing_only() if read_only else contextlib.nullcontext():
            self.task = registry.get('task', config.task)(config, workdir, self.mesh)
        contracts.check_task(self.task, config.task)
        self.method = make_method(config.method, self.task.model_fns)
        self.tx = optim.make_optimizer(
            config.optimizer, stacked=getattr(self.method, 'stacked_params', False)
        )
        init_fn, self.state_sharding, self.abstract = train_step_lib.make_init(
            self.method,
            self.tx,
            self.task.init_batch(),
            self.mesh,
            seed=config.seed,
            shard_params=config.mesh.shard_params,
        )
        self.batch_sharding = sharding_lib.batch_sharding(self.mesh)
        self._own_rows = _feed_own_rows(self.task.train_batches)
        self.step_fn = train_step_lib.make_train_step(
            self.method,
            self.tx,
            state_sharding=self.state_sharding,
            batch_sharding=self.batch_sharding,
            microbatches=config.get('microbatches', 1),
        )
        c = config.checkpoint
        self.ckpt = checkpoint_lib.Checkpointer(
            os.path.join(workdir, 'checkpoints'),
            every=c.every_steps,
            keep=c.keep,
            async_save=c.async_save,
            best_metric=c.get('best_metric', ''),
            best_mode=c.get('best_mode', 'max'),
            read_only=read_only,
        )
        try:
            if restore_step is None:
                restored = self.ckpt.restore_latest(
                    self.abstract, set_aside=not read_only
                )
            elif restore_step not in self.ckpt.all_steps():
                raise CheckpointMismatchError(
                    f'No checkpoint for step {restore_step} in '
                    f'{self.ckpt.directory}; available: {self.ckpt.all_steps()}'
                )
            else:
                restored = (
                    restore_step,
                    *self.ckpt.restore_named(restore_step, self.abstract),
                )
        except CheckpointMismatchError as e:
            self._close_quietly()
            changed = _changed_settings(config, workdir)
            if not changed:
                raise
            raise CheckpointMismatchError(
                f'{e}\nSettings that differ from the run saved in {workdir} '
                f'(config.json): {"; ".join(changed)}. Restore the ones that change the '
                'model or optimizer state, or use a new --workdir.'
            ) from None
        skipped = False
        if restored is not None and not read_only:
            try:
                skipped = _check_stage(
                    self.method, self.task.model_fns, config, workdir, restored[0]
                )
            except ConfigError:
                self._close_quietly()
                raise
        changed = [] if read_only else _changed_settings(config, workdir, new=False)
        # Evaluation settings that change what an evaluation measures: a run
        # started again with nothing to train evaluates its last step again
        # (its logged evaluation used the saved settings).
        self._eval_changed = [
            c
            for c in changed
            if c.startswith('eval.') and c.split(':')[0] not in _EVAL_SCHEDULE
        ]
        if not read_only:
            _write_config(config, workdir, source)
            _clear_error(workdir)
        meta = {}
        if restored is None and read_only:
            self._close_quietly()
            raise CheckpointMismatchError(
                f'No checkpoints in {self.ckpt.directory} (has the run saved one yet?).'
            )
        if restored is None:
            self.state = init_fn()
            self.start_step = 0
        else:
            self.start_step, self.state, meta = restored
            say(
                f'{"Loaded" if read_only else "Resumed from"} '
                f'{self.ckpt.directory}/{self.start_step}.'
            )
            if changed:
                say(
                    'Note: settings changed since the run was saved: '
                    f'{"; ".join(changed)}.'
                )
            others = {} if read_only else self.ckpt.ranked_by_another_metric()
            if others:
                say(
                    f'Note: {_plural(len(others), "checkpoint")} '
                    f'({", ".join(map(str, others))}) '
                    f'{"was" if len(others) == 1 else "were"} ranked by '
                    f'{" / ".join(sorted({n for v in others.values() for n in v}))}'
                    + (
                        f', not checkpoint.best_metric={c.best_metric!r}'
                        if c.get('best_metric', '')
                        else ', and this run has no checkpoint.best_metric'
                    )
                    + '; this run keeps them as they are (delete them by hand '
                    'once unneeded).'
                )
            self.task.train_batches.set_position(
                _resume_position(meta, self.task.train_batches, note=not read_only)
            )
            if skipped and any(map(self.method.refresh_due, range(self.start_step))):
                # The boundary's own refresh (codistillation's exchange right
                # before distilling) fell in steps this run will not take.
                # (None is due for a method that never refreshes: a
                # codistillation exchanging predictions, not weights.)
                with jax.set_mesh(self.mesh):
                    self.state = self.step_fn.refresh_fn(self.state)
                say(
                    f'Note: this config moves the run past a stage boundary of '
                    f'method {config.method.name!r} before step {self.start_step}; '
                    'its extra state was refreshed now, as at that boundary.'
                )
        self.early_stop = _EarlyStop(
            c.best_metric,
            c.best_mode,
            c.get('patience', 0),
            meta.get('early_stop'),
            min_delta=c.get('min_delta', 0.0),
        )
        self.writer = metrics_lib.MetricWriter(
            workdir,
            resume_step=self.start_step if restored else None,
            enabled=not read_only,
        )

    def _close_quietly(self):
        """Closes the checkpointer and the logs on the way out of an error or
        a stop signal: a failure here is logged, so that it does not hide the
        error that stopped the run. (TensorBoard's writer queues its events
        for a daemon thread: unclosed, the last ones died with the process.)"""
        try:
            self.ckpt.close()
        except Exception as e:  # pylint: disable=broad-except
            logging.warning('Closing the checkpoints after an error failed: %s', e)
        try:
            if getattr(self, 'writer', None) is not None:
                self.writer.close()
        except Exception as e:  # pylint: disable=broad-except
            logging.warning('Closing the metrics logs after an error failed: %s', e)

    def _best_value(self, metrics: dict) -> dict:
        """{best_metric: value} from an evaluation's metrics; a ConfigError
        listing the logged names if the run does not log it."""
        name = self.ckpt.best_metric
        if name not in metrics:
            raise ConfigError(
                f'checkpoint.best_metric={name!r} is not among the evaluation '
                f'metrics of this run: {", ".join(sorted(metrics))}.'
            )
        return {name: float(metrics[name])}

    def _save(self, step: int, force: bool = False, metrics: dict | None = None):
        meta = {
            'data_position': self.task.train_batches.position,
            'step': step,
            # How the data was batched: a resume on other devices re-batches.
            'devices': jax.device_count(),
            'batches_per_epoch': self.task.train_batches.batches_per_epoch(),
        }
        if self.ckpt.best_metric:
            meta['early_stop'] = self.early_stop.meta()
        # Every save, not only those at a log step (where the window's
        # metrics are checked): a ranked evaluation's or a stop signal's
        # save must not keep diverged parameters as the last good ones.
        # The method's own state too: a policy of its own (RL multi-teacher)
        # can diverge while the model's parameters and losses stay finite.
        if not bool(_all_finite((self.state.params, self.state.extra))):
            raise self._diverged(
                step,
                f'Non-finite {_non_finite_part(self.state)} after step {step}; '
                'not saved',
            )
        return self.ckpt.save(step, self.state, meta, force=force, metrics=metrics)

    def _diverged(self, step: int, what: str) -> NonFiniteLossError:
        """The error that stops a run whose training diverged at `step`."""
        self.ckpt.wait()  # A save in flight is the last good checkpoint.
        last = self.ckpt.latest_step()
        kept = (
            f'the last good checkpoint (step {last}) is kept in {self.ckpt.directory}'
            if last is not None
            else 'no checkpoint was saved before it diverged'
        )
        return NonFiniteLossError(
            f'{what}. Stopped; {kept}. Lower optimizer.learning_rate or raise '
            'optimizer.warmup_steps.'
        )

    def _log(self, step, history, seconds, compiling, progress, end, input_seconds):
        """Logs a window of `history`'s steps: `seconds` of stepping, plus
        `compiling` seconds spent compiling (reported apart); training ends
        at step `end`, `progress` seconds from now (None: it stops now).
        `input_seconds`: the window's host time spent building batches and
        sending them to the devices."""
        m = _mean_metrics(history)
        if not all(math.isfinite(v) for v in m.values()):
            raise self._diverged(
                step,
                f'Non-finite training metrics between steps '
                f'{step - len(history)} and {step}: '
                + ', '.join(f'{k}={v}' for k, v in m.items()),
            )
        counted = 'train/tokens' in m
        # Throughput of the steps themselves: compilation (first steps, a new
        # batch shape or phase) is reported apart, not spread over the window.
        m['train/compile_seconds'] = compiling
        # What 'train/tokens' counts: target tokens, or examples for
        # classifiers (`task.throughput`: the metric's word, the line's unit).
        name, unit = getattr(self.task, 'throughput', ('tokens', 'tok'))
        rate_key = f'train/{name}_per_s'
        m[rate_key] = m.pop('train/tokens', 0.0) / seconds
        for key in [k for k in m if k.startswith('train/tokens/')]:
            # Per replica (codistillation: 'train/tokens/r0'): rates too, not
            # the window's counts under a name that reads as one.
            m[f'{rate_key}/{key.removeprefix("train/tokens/")}'] = m.pop(key) / seconds
        m['train/steps_per_s'] = len(history) / seconds
        # Near 1, the host's input, not the devices, sets the pace.
        m['train/input_fraction'] = min(input_seconds / seconds, 1.0)
        # Only the scalar leaves the device, not the optimizer's moments.
        m['train/learning_rate'] = float(
            jax.device_get(optim.current_learning_rate(self.state.opt_state))
        )
        self.writer.write(step, m)
        rate = f'{m[rate_key]:,.0f} {unit}/s | ' if counted else ''
        compiled = f'compiled {compiling:.1f}s | ' if compiling >= 0.05 else ''
        fed = m['train/input_fraction']
        fed = f'input {fed:.0%} | ' if fed >= _SHOW_INPUT_FRACTION else ''
        eta = 'stopping' if progress is None else f'ETA {_fmt_time(progress)}'
        say(
            f'step {step}/{end} | loss {m["train/loss"]:.4f} | {rate}'
            f'{1 / m["train/steps_per_s"]:.3f} s/step | {fed}{compiled}{eta}'
        )
        return m

    def model_params(self):
        """The parameters of the model the run exports (`method.eval_params`:
        what `evaluate`, `translate` and `extract` use), as a pytree; the
        moving average where the run keeps one and `eval.use_ema` asks for it.
        E.g. `Trainer(config, workdir, read_only=True).model_params()`."""
        return self.method.eval_params(self._evaluated_params(), self.state.extra)

    def _evaluated_params(self):
        """The parameters evaluated: the moving average, if the run keeps one
        and `eval.use_ema` (the default) asks for it."""
        return optim.model_params(
            self.state, use_ema=self.config.eval.get('use_ema', True)
        )

    def evaluate(self, step: int, stop: _StopSignals | None = None) -> dict:
        """Evaluates every model the method trains; the first one unprefixed.

        With several models (codistillation's replicas) each gets its own
        'eval/NAME/...' metrics, and where the task can predict, the
        agreement between models' predictions on the held-out set.

        `stop`: a _StopSignals whose signal abandons the evaluation (raises
        `_Abandoned`) before anything is logged.
        """
        started = time.time()
        self._use_compile_cache()
        with stop.abandonable() if stop else contextlib.nullcontext():
            models, m, examples = self._evaluate_models()
        m['eval/seconds'] = time.time() - started
        self.writer.write(step, m)
        say(
            f'eval @ {step}: '
            + ', '.join(f'{k.split("/", 1)[1]} {v:.4g}' for k, v in m.items())
        )
        if examples and len(models) > 1:
            say(f'  ({next(iter(models))}:)')
        for src, hyp, ref in examples[:2]:
            say(f'  src: {src}\n  hyp: {hyp}\n  ref: {ref}')
        return m

    def _evaluate_models(self):
        """-> (the models evaluated, their metrics, the first one's sample
        translations); logs nothing."""
        models = self.method.eval_models(self._evaluated_params(), self.state.extra)
        m, predictions, examples = {}, {}, []
        for i, (name, params) in enumerate(models.items()):
            result = contracts.checked_eval(self.task, self.task.evaluate(params))
            if i == 0:
                m.update(result)
                # What the task kept of this evaluation (sample translations,
                # the early-exit curve) belongs with the unprefixed metrics:
                # the first model's, before the next evaluation replaces it.
                examples = list(getattr(self.task, 'last_examples', []))
                self.last_curve = list(getattr(self.task, 'last_curve', None) or [])
                self.last_curve_model = name
            if len(models) > 1:
                m.update(
                    {
                        k.replace('eval/', f'eval/{name}/', 1): v
                        for k, v in result.items()
                    }
                )
                if hasattr(self.task, 'predict'):
                    predictions[name] = self.task.predict(params)
                    contracts.check_predictions(self.task, predictions[name])
        if len(predictions) > 1:
            m.update(agreement_metrics(predictions))
        return models, m, examples

    def run(self, deadline: float | None = None) -> dict:
        """Trains, evaluates and checkpoints; returns the final summary.

        Training stops at `num_train_steps`, or earlier at the last step that
        fits before `deadline` (a `time.time()` value; default: the Trainer's
        construction plus `config.time_limit_minutes`, if that is > 0). The
        final checkpoint, and the evaluation at the end, follow that step.
        """
        if getattr(self, '_ran', False):
            # Its checkpointer and logs are closed and the workdir released.
            raise JaxdistillError(
                'This Trainer has run already; to train further, make a new '
                'Trainer (or call train_and_evaluate) on the same workdir: it '
                'resumes from the last checkpoint.'
            )
        self._ran = True
        self._use_compile_cache()
        c = self.config
        total = c.num_train_steps
        limit = c.get('time_limit_minutes', 0.0)
        if deadline is None and limit:
            deadline = self.created + 60 * limit
        self.deadline = deadline
        self.data_summary = self.task.data_summary()
        say(
            f'Training {c.method.name} on {c.task} for {total} steps '
            f'({_plural(jax.device_count(), "device")}, '
            f'{_plural(jax.process_count(), "process")}'
            + _feeding_note(self._own_rows)
            + ')'
            + _replica_layout(c, self.mesh)
            + _microbatch_note(c)
            + '\ndata: '
            + ', '.join(
                f'{k} {v:.3g}' if isinstance(v, float) else f'{k} {v}'
                for k, v in self.data_summary.items()
            )
        )
        task_notes = getattr(self.task, 'start_notes', list)()
        if c.mesh.shard_params:
            split = sharding_lib.model_split_note(
                self.abstract.params, self.state_sharding.params, self.mesh
            )
            task_notes = [split, *task_notes]
        notes = _inert_settings(c, self.data_summary) + _selection_on_test(c)
        for note in notes + task_notes:
            say(f'Note: {note}')
        try:
            with metrics_lib.CompileClock() as clock, _StopSignals() as stop:
                step, last_train, last_eval, seconds = self._train_loop(clock, stop)
            return self._finish(step, seconds, last_train, last_eval)
        except BaseException as e:
            # Whatever stops the loop or its end (an error, Ctrl-C, a full
            # disk while the summary is written), a checkpoint being written
            # in the background is finished, not left half-written, and the
            # logs and the workdir are released.
            self._close_quietly()
            if isinstance(e, Exception):  # Not Ctrl-C or SIGTERM.
                _record_error(self.workdir, e)
            self._release_lock()
            if getattr(self, 'profiler', None):
                self.profiler.stop(quiet=True)
            raise

    def _train_loop(self, clock, stop):
        """-> (last step, last train metrics, last eval metrics, seconds).

        `stop`: a _StopSignals; once it has caught SIGINT or SIGTERM (with
        several processes: once they agree on a step after a SIGTERM to any),
        the loop saves the step it has finished and raises KeyboardInterrupt.
        """
        c = self.config
        total = c.num_train_steps
        history, window_start, run_start = [], time.time(), time.time()
        last_train = {}
        step = saved = self.start_step
        end, logged, last_eval, evaluated = self._before_loop(step, total, stop)
        window_start = time.time()  # After any evaluation _before_loop made.
        batches = self.task.train_batches
        input_seconds = 0.0  # The window's host time building and sending batches.
        # A window cut by an evaluation between log lines: its (stepping,
        # compiling) seconds before the cut, added at the next log line.
        banked = (0.0, 0.0)
        profiler = self.profiler = _Profiler(self.workdir, c.get('profile_steps', 0))
        while step < end:
            if stop.check(step):
                if history:  # The steps since the last log line: logged too.
                    stepping, compiling, _ = _window(clock, window_start, history)
                    stepping, compiling = stepping + banked[0], compiling + banked[1]
                    # The run's end, not this step; no ETA: it stops here.
                    self._log(
                        step, history, stepping, compiling, None, end, input_seconds
                    )
                self._save_on_signal(step, saved, stop.caught)
            step += 1
            started = time.perf_counter()
            batch = sharding_lib.global_batch(
                next(batches), self.batch_sharding, local=self._own_rows
            )
            input_seconds += time.perf_counter() - started
            self.state, aux = self.step_fn(
                self.state,
                batch,
                self.method.phase(step - 1),
                refresh=self.method.refresh_due(step - 1),
            )
            history.append(aux)
            profiler.after_step(step, aux)
            if len(history) > _MAX_IN_FLIGHT:
                # Usually long finished: a cheap check that bounds the queue.
                jax.block_until_ready(history[-1 - _MAX_IN_FLIGHT])
            save_now = step % c.checkpoint.every_steps == 0 or step == end
            if step % c.log_every_steps == 0 or save_now:
                stepping, compiling, now = _window(clock, window_start, history)
                stepping, compiling = stepping + banked[0], compiling + banked[1]
                banked = (0.0, 0.0)
                # This session's seconds since its start, compilation left
                # out; evaluations and checkpoints count, so the pace, the
                # ETA and a time limit's last step include them.
                busy = now - run_start - clock.seconds(run_start, now)
                if self.deadline is not None and step < end:
                    # Re-estimated from the planned total every time: the
                    # first windows' pace (tracing, new shapes) is pessimistic.
                    end = self._steps_before_deadline(step, total, busy)
                    save_now = save_now or step == end
                last_train = self._log(
                    step,
                    history,
                    stepping,
                    compiling,
                    busy / max(step - self.start_step, 1) * (end - step),
                    end,
                    input_seconds,
                )
                history, window_start, input_seconds = [], time.time(), 0.0
                profiler.after_log(step)
            eval_now = bool(c.eval.every_steps) and step % c.eval.every_steps == 0
            ranked_eval = self.ckpt.best_metric and (
                eval_now or (step == end and c.eval.at_end)
            )
            if history and (eval_now or ranked_eval):
                # Between log lines: the window so far is kept, the
                # evaluation (and its save) left out of it.
                stepping, compiling, _ = _window(clock, window_start, history)
                banked = (banked[0] + stepping, banked[1] + compiling)
            if ranked_eval:
                # Evaluated first, then saved with the value it is ranked by.
                last_eval, evaluated = self.evaluate(step), step
                ranked = self._best_value(last_eval)
                # Patience counts in the method's last stage only: a TSJT
                # stage 1, a codistillation burn-in or an MT2ST auxiliary
                # phase that stops improving is not the end of the run.
                self.early_stop.record(
                    step,
                    ranked[self.ckpt.best_metric],
                    counts=self.method.stage(step - 1)
                    >= self.method.stage(c.num_train_steps - 1),
                )
                if self._save(step, force=True, metrics=ranked):
                    saved = step
                if step < end and self._stop_early():
                    end, self.stopped_early = step, True
                    say(self._early_stop_message(step))
                window_start = time.time()  # Keep eval and saving out of throughput.
                continue
            if save_now:
                if self._save(step, force=step == end):
                    saved = step
                window_start = time.time()  # Keep checkpointing out of throughput.
            if eval_now:
                try:
                    last_eval, evaluated = self.evaluate(step, stop), step
                except _Abandoned:  # Saved now, evaluated when resumed.
                    self._save_on_signal(step, saved, stop.caught, abandoned=True)
                window_start = time.time()  # Keep eval out of throughput.
        profiler.stop(history[-1] if history else None)
        try:
            last_eval = self._after_loop(
                step, total, evaluated, logged, last_eval, stop
            )
        except _Abandoned:  # The last step is saved; evaluated when resumed.
            say(
                f'{stop.caught}: stopped during the final evaluation of step {step}, '
                f'which is saved in {self.ckpt.directory}/{step}; run the same '
                'command to evaluate it.'
            )
            raise KeyboardInterrupt(stop.caught) from None
        now = time.time()
        # The session's compilation: the logged `train/compile_seconds` is
        # each window's own, and the last window's is usually 0.
        self.compile_seconds = clock.seconds(run_start, now)
        return step, last_train, last_eval, now - run_start

    def _before_loop(self, step: int, total: int, stop: _StopSignals):
        """What a run starting at `step` does before its first step.

        Says so when nothing is left to train, and evaluates `step` first
        where a run stopped during that evaluation (a signal from `stop`
        abandons it). -> (the step to train up to, the log's evaluation of
        `step` or None, eval metrics, the step they are of or None).
        """
        end, last_eval, evaluated = total, {}, None
        # An early stop at the last step is no early stop: the run finished.
        self.stopped_early = self.early_stop.spent and step < total
        if self.stopped_early:  # Started again after an early stop.
            end = step
            say(f'{self._early_stop_message(step)} Nothing left to train.')
        elif step >= end and step:
            say(
                f'Step {step} reached num_train_steps={total} already: nothing '
                'left to train.'
                if step == total
                else f'The run is at step {step}, past num_train_steps={total}: '
                'nothing to train (raise num_train_steps to train on).'
            )
        # The evaluation the log holds for the step the run starts at: read
        # once, where it is needed (an `eval.every_steps` step, or nothing
        # left to train).
        logged = (
            self._logged_eval(step)
            if step and (self._evaluated_with_save(step) or step >= end)
            else None
        )
        if (
            not self.stopped_early
            and self._evaluated_with_save(step)
            and logged is None
        ):
            # Saved before it was evaluated, and stopped during that
            # evaluation: the run resumed after it. (Or a model that
            # `extract` wrote, which no run has evaluated here.)
            extracted = os.path.exists(os.path.join(self.workdir, 'extracted.json'))
            say(
                f'Evaluating step {step} first: '
                + (
                    'the extracted model, before training it further.'
                    if extracted
                    else 'the run stopped during its evaluation, before it was logged.'
                )
            )
            try:
                last_eval, evaluated = self.evaluate(step, stop), step
            except _Abandoned:
                say(
                    f'{stop.caught}: stopped during the evaluation of step {step}, '
                    'before training on; run the same command to evaluate it '
                    'and resume.'
                )
                raise KeyboardInterrupt(stop.caught) from None
        return end, logged, last_eval, evaluated

    def _after_loop(self, step, total, evaluated, logged, last_eval, stop):
        """Says why the run stopped short, waits for the last save, and
        evaluates the last step where `eval.at_end` asks and nothing has (a
        signal from `stop` abandons that evaluation: `_Abandoned`).
        -> the last eval metrics."""
        self.time_limited = step < total and not self.stopped_early
        if self.time_limited:
            say(
                f'Time limit: stopped at step {step} of {total} '
                f'({self.pace:.3f} s/step so far).'
            )
        self.ckpt.wait()
        if not self.config.eval.at_end or evaluated == step:
            return last_eval
        # Started again with nothing to train: the final evaluation, if
        # logged already with these evaluation settings, is not repeated
        # (`evaluate` does that).
        if step != self.start_step or logged is None:
            return self.evaluate(step, stop)
        if self._eval_changed:
            say(
                f'Evaluating step {step} again: its logged evaluation used other '
                f'settings ({"; ".join(self._eval_changed)}).'
            )
            self.writer.drop(step, 'eval/')  # Logged once, with these.
            return self.evaluate(step, stop)
        say(
            f'Step {step} is evaluated already (metrics.jsonl); '
            f'python -m jaxdistill.evaluate --workdir {self.workdir} '
            'evaluates it again.'
        )
        return logged

    def _evaluated_with_save(self, step: int) -> bool:
        """Whether `step` is an `eval.every_steps` step saved before it is
        evaluated (not so where checkpoints are ranked by `best_metric`:
        evaluated first, then saved with the value)."""
        every = self.config.eval.every_steps
        return bool(step and every and not step % every and not self.ckpt.best_metric)

    def _logged_eval(self, step: int) -> dict | None:
        """The evaluation metrics.jsonl holds for `step`, or None. With
        several processes, process 0 (which writes the log) answers for all;
        the others get {} for a logged one."""
        logged = None
        if jax.process_index() == 0:
            try:
                records = metrics_lib.read_metrics(self.workdir)
            except DataError:  # No log (deleted, or never written).
                records = []
            for r in records:
                if r.get('step') == step and any(k.startswith('eval/') for k in r):
                    logged = {k: v for k, v in r.items() if k.startswith('eval/')}
        if jax.process_count() > 1:
            found = multihost_utils.broadcast_one_to_all(np.int32(logged is not None))
            logged = (logged or {}) if found else None
        return logged

    def _early_stop_message(self, step: int) -> str:
        kept = self.ckpt.best_step()
        return self.early_stop.message(step, kept[0] if kept else None)

    def _stop_early(self) -> bool:
        """Whether `checkpoint.patience` is spent; with several processes,
        process 0's answer holds for all, so every process stops at the same
        step."""
        spent = self.early_stop.spent
        if jax.process_count() > 1:
            spent = bool(multihost_utils.broadcast_one_to_all(np.int32(spent)))
        return spent

    def _save_on_signal(
        self, step: int, saved: int, signame: str, abandoned: bool = False
    ):
        """Saves the finished `step` (unless saved already), then raises
        KeyboardInterrupt: an interrupted run resumes where it stopped.
        `abandoned`: the signal stopped the evaluation of `step`, which the
        resumed run makes first (`_before_loop`)."""
        if step > saved:
            self._save(step, force=True)
        self.ckpt.wait()
        say(
            f'{signame}: stopped after step {step}'
            + (' (its evaluation abandoned)' if abandoned else '')
            + f', saved in {self.ckpt.directory}/{step}; run the same command to '
            + ('evaluate it and resume.' if abandoned else 'resume.')
        )
        raise KeyboardInterrupt(signame) from None

    def _steps_before_deadline(self, step: int, total: int, busy: float) -> int:
        """The last step up to `total` that fits before `self.deadline`, at
        the pace so far (never before `step`).

        `busy`: seconds this run has spent since its start, compilation left
        out; evaluations and checkpoints count, so the pace includes them.
        With several processes, process 0's answer holds for all, so every
        process stops at the same step.
        """
        pace = busy / max(step - self.start_step, 1)
        fit = step + int(max(self.deadline - time.time(), 0.0) / pace)
        end = min(total, max(fit, step))
        if jax.process_count() > 1:
            end = int(multihost_utils.broadcast_one_to_all(np.int32(end)))
        self.pace = pace
        return end

    def _finish(self, step, seconds, last_train, last_eval) -> dict:
        params = self.model_params()
        count = lambda p: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(p))
        n_params = count(params)
        models = self.method.eval_models(self._evaluated_params(), self.state.extra)
        sizes = (
            {f'num_params/{k}': count(p) for k, p in models.items()}
            if len(models) > 1
            else {}
        )
        summary = {
            'step': step,
            # This session's: the steps from `trained_from_step` (a resume's
            # checkpoint; 0 for a fresh run) to `step`.
            'trained_from_step': self.start_step,
            'train_seconds': seconds,
            # Of train_seconds; the log's train/compile_seconds are per window.
            'compile_seconds': getattr(self, 'compile_seconds', 0.0),
            'steps_per_s': (step - self.start_step) / max(seconds, 1e-9),
            'stopped_by_time_limit': self.time_limited,
            'stopped_early': self.stopped_early,
            'num_params': n_params,
            **sizes,
            'workdir': self.workdir,
            **{
                k: float(v)
                for k, v in {**last_train, **last_eval}.items()
                if k != 'train/compile_seconds'  # The last window's: see above.
            },
            **{f'data/{k}': v for k, v in self.data_summary.items()},
        }
        best = self.ckpt.best_step() if self.ckpt.best_metric else None
        if best is not None:  # The checkpoint kept for its best evaluation.
            summary['best_step'] = best[0]
            summary[f'best/{self.ckpt.best_metric}'] = best[1]
        if hasattr(self.task, 'bleu_signature'):
            summary['sacrebleu_signature'] = self.task.bleu_signature
        if step == self.start_step:
            # Nothing trained this time (a finished run started again): the
            # training record of the run that did train it is kept.
            previous = _saved_summary(self.workdir)
            summary.update(
                {
                    k: v
                    for k, v in previous.items()
                    if k not in summary
                    or k
                    in (
                        'train_seconds',
                        'compile_seconds',
                        'steps_per_s',
                        'trained_from_step',
                    )
                }
            )
        if jax.process_index() == 0:
            # Whole or not at all: `runs` reads a torn file as a stopped run.
            _write_json(
                os.path.join(self.workdir, 'summary.json'),
                json.dumps(summary, indent=2),
            )
            _plot_quietly(self.workdir)
        say(
            'Done.\n'
            + '\n'.join(
                f'  {k}: {v:.4g}' if isinstance(v, float) else f'  {k}: {v}'
                for k, v in summary.items()
            )
        )
        self.ckpt.close()
        self.writer.close()
        self._release_lock()
        return summary


def _saved_summary(workdir: str) -> dict:
    """The summary.json a run left in `workdir`; {} if none or unreadable."""
    try:
        with open(os.path.join(workdir, 'summary.json'), encoding='utf-8') as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _plot_quietly(workdir: str):
    """DIR/metrics.png of the run's curves; a failure to draw costs a warning,
    never the finished run."""
    from jaxdistill import plot  # pylint: disable=g-import-not-at-top

    try:
        plot.plot_runs([workdir], os.path.join(workdir, 'metrics.png'))
    except Exception as e:  # pylint: disable=broad-except
        logging.warning('could not plot %s/metrics.jsonl: %s', workdir, e)


def train_and_evaluate(config, workdir: str, source: dict | None = None) -> dict:
    """Library entry point behind `python -m jaxdistill.train`; `source`: the
    config file and overrides that made `config` (`cli.source_record`), saved
    beside config.json for `train --workdir DIR` to resume with."""
    return Trainer(config, workdir, source=source).run()
