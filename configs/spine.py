"""Config blocks every task's base config shares: the device mesh and the
checkpoints. The task bases (translation_base, image_classification_base,
mt2st_sst2) call these, then set their own fields."""

import ml_collections


def mesh():
    config = ml_collections.ConfigDict()
    # Devices per model shard; the data axis gets the rest.
    config.model_axis_size = 1
    # Split large parameter matrices over the model axis.
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
    return config
