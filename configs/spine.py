"""Config blocks every task's base config shares: the device mesh, the
checkpoints and the top-level run controls (time limit, micro-batches,
profiling, plugin imports, compilation cache). The task bases (translation_base, image_classification_base,
mt2st_sst2) call these, then set their own fields."""

import ml_collections


def mesh():
    config = ml_collections.ConfigDict()
    # Devices per model shard; the data axis gets the rest. The devices along
    # it hold the same rows, so it pays only with shard_params. It must
    # divide each process's devices.
    config.model_axis_size = 1
    # Split parameter arrays of >= 2**14 entries over the model axis (smaller
    # ones stay whole). README, "The device mesh".
    config.shard_params = False
    # Device groups for codistillation's replicas (method.num_replicas): 0
    # gives each replica its own group where the devices divide, otherwise
    # stacks several replicas on each group (all on one device if need be).
    # Methods without replicas use one group.
    config.replica_axis_size = 0
    return config


def checkpoint(every_steps: int, keep: int):
    config = ml_collections.ConfigDict()
    # Save every N steps (and at the end).
    config.every_steps = every_steps
    # Keep the last K checkpoints (0: keep all).
    config.keep = keep
    # Write checkpoints in the background.
    config.async_save = True
    # Also keep the checkpoint with the best value of this evaluation metric
    # (a logged name, e.g. 'eval/bleu'; '' = none), however old; every
    # evaluation then saves a checkpoint. summary.json names its step.
    config.best_metric = ''
    # 'max' (accuracy, BLEU) or 'min' (loss).
    config.best_mode = 'max'
    # Early stopping: stop once best_metric has not improved (strictly) for
    # this many evaluations (eval.every_steps apart), keeping the best
    # checkpoint. 0 = never.
    config.patience = 0
    # With patience: an evaluation counts as an improvement only if it beats
    # the best so far by more than this (in best_metric's units; 0 = any).
    config.min_delta = 0.0
    return config


def step_controls(config):
    """Adds the top-level keys every run has besides its step count."""
    # Wall-clock limit in minutes, counted from the Trainer's construction:
    # training stops at the last step that fits (then the final checkpoint and
    # evaluation). 0 = none.
    config.time_limit_minutes = 0.0
    # Gradient accumulation: each batch runs as this many micro-batches, one
    # after another, whose gradients make one update: the whole batch's
    # update with 1/N of its activation memory. Batches then hold a multiple
    # of N rows per device.
    config.microbatches = 1
    # Steps to trace with jax.profiler into DIR/profile (TensorBoard's
    # profile plugin), from the step after the first log line, when the
    # first shapes have compiled. 0 = none.
    config.profile_steps = 0
    # Modules (names, or paths of .py files) to import before the run is
    # built: methods, models or tasks of your own that register themselves
    # (docs/extending.md). evaluate and translate import them again.
    config.imports = ()
    # JAX's persistent compilation cache: 'auto' = JAX_COMPILATION_CACHE_DIR
    # where set, else WORKDIR/compilation_cache; a directory; or '' (none).
    # A resumed run, evaluate and translate then load the compiled steps and
    # decoding loops instead of compiling them again.
    config.compilation_cache_dir = 'auto'
