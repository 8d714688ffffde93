"""CIFAR-style ResNet with classifier exits after chosen stages (BYOT layout).

The backbone is a 3×3 stem and `len(stage_sizes)` stages of basic blocks;
stage s has `width · 2^s` channels and halves the resolution (except stage 0).
Exit i after stage s < last gets, as in "Be Your Own Teacher" (Zhang et al.
2019), a bottleneck that brings the feature map to the deepest stage's width
and resolution, then global average pooling (the exit's feature F_i,
[B, width · 2^(S-1)]) and a dense classifier. The bottleneck (`exit_head`) is
either one strided ResNet bottleneck block per missing stage ('blocks'), or
the branch of a widely used public PyTorch implementation ('branch': 1×1
reduce to a quarter of the deepest width, one k×k convolution of stride
k = 2^(missing stages), 1×1 expand; no residual), three convolutions whatever
the depth; or that branch after an average pool to the deepest resolution,
with a 3×3 in the middle ('pool'), so that no exit convolution runs at a
shallow stage's resolution. The deepest exit pools the last stage.
Normalisation is GroupNorm (per-example statistics): no batch statistics to
carry, and an example's prediction never depends on which other examples
share its batch, which per-example early exit needs.

Parameter layout: stem, stage{s}_block{b}, exit{i}_bottleneck{j} ('blocks') or
exit{i}_branch ('branch', 'pool'), exit{i}_head.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdistill import registry
from jaxdistill.models import multi_exit

Array = jax.Array
_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _norm(channels: int, groups: int, name=None, dtype=jnp.float32):
    # Flax reduces the statistics in float32 whatever `dtype` is.
    return nn.GroupNorm(num_groups=min(groups, channels), dtype=dtype, name=name)


def _conv(channels, kernel, stride, name, dtype):
    return nn.Conv(
        channels,
        (kernel, kernel),
        (stride, stride),
        use_bias=False,
        kernel_init=_CONV_INIT,
        dtype=dtype,
        name=name,
    )


def _reduce_expand(x, channels, kernel, stride, groups, dtype):
    """1×1 to a quarter of `channels`, k×k of `stride`, 1×1 to `channels`.

    Each convolution normalised, ReLU after the first two; called inside a
    compact module, whose parameters conv1..3 and norm1..3 these become.
    """
    mid = max(channels // 4, groups)
    h = nn.relu(_norm(mid, groups, 'norm1', dtype)(_conv(mid, 1, 1, 'conv1', dtype)(x)))
    h = _conv(mid, kernel, stride, 'conv2', dtype)(h)
    h = nn.relu(_norm(mid, groups, 'norm2', dtype)(h))
    return _norm(channels, groups, 'norm3', dtype)(
        _conv(channels, 1, 1, 'conv3', dtype)(h)
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual; projection when the shape changes."""

    channels: int
    stride: int = 1
    groups: int = 8
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[B, H, W, C] -> [B, H / stride, W / stride, channels]."""
        conv = lambda c, k, s, name: _conv(c, k, s, name, self.dtype)
        norm = lambda c, name: _norm(c, self.groups, name, self.dtype)
        h = conv(self.channels, 3, self.stride, 'conv1')(x)
        h = nn.relu(norm(self.channels, 'norm1')(h))
        h = conv(self.channels, 3, 1, 'conv2')(h)
        h = norm(self.channels, 'norm2')(h)
        if x.shape[-1] != self.channels or self.stride != 1:
            x = conv(self.channels, 1, self.stride, 'proj')(x)
            x = norm(self.channels, 'proj_norm')(x)
        return nn.relu(h + x)


class Bottleneck(nn.Module):
    """1×1 reduce, strided 3×3, 1×1 expand, with a projected residual."""

    channels: int
    stride: int = 2
    groups: int = 8
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[B, H, W, C] -> [B, H / stride, W / stride, channels]."""
        h = _reduce_expand(x, self.channels, 3, self.stride, self.groups, self.dtype)
        x = _conv(self.channels, 1, self.stride, 'proj', self.dtype)(x)
        x = _norm(self.channels, self.groups, 'proj_norm', self.dtype)(x)
        return nn.relu(h + x)


class Branch(nn.Module):
    """1×1 reduce, k×k convolution of stride k, 1×1 expand; no residual.

    The exit bottleneck of a widely used public PyTorch implementation of BYOT
    (luanyunteng/pytorch-be-your-own-teacher, `branchBottleNeck`; not the
    authors' code): one patch-wise convolution does all the downsampling, so
    an exit costs three convolutions however many stages it skips. With
    `pool_first`, a k×k average pool of stride k does the downsampling before
    any convolution and the middle one is a 3×3 of stride 1: every
    convolution then runs at the deepest stage's resolution, so the exit
    costs little more than the backbone before it.
    """

    channels: int
    stride: int
    pool_first: bool = False
    groups: int = 8
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """[B, H, W, C] -> [B, ceil(H / stride), ceil(W / stride), channels]."""
        kernel = stride = self.stride
        if self.pool_first:
            window = (self.stride, self.stride)
            x = nn.avg_pool(x, window, window, padding='SAME', count_include_pad=False)
            kernel, stride = 3, 1
        h = _reduce_expand(x, self.channels, kernel, stride, self.groups, self.dtype)
        return nn.relu(h)


_EXIT_HEADS = ('blocks', 'branch', 'pool')


@registry.register('model', 'resnet')
class ResNet(nn.Module):
    """Multi-exit CIFAR ResNet; see the module docstring.

    Attributes:
      num_classes: classifier outputs.
      stage_sizes: basic blocks per stage; (2, 2, 2, 2) is ResNet-18.
      width: channels of stage 0 (doubling per stage).
      exits: stages (0-based, < last) followed by a shallow exit; the
        deepest exit after the last stage always exists. () is a plain ResNet.
      norm_groups: GroupNorm groups.
      pixel_mean, pixel_std: per-channel statistics of [0, 1] pixels.
      exit_head: the shallow exits' bottleneck, 'blocks' (a strided ResNet
        bottleneck block per missing stage), 'branch' (a public BYOT
        implementation's three-convolution branch) or 'pool' (average pool to
        the deepest resolution, then three convolutions); see the module
        docstring.
      dtype: compute dtype of convolutions and normalisation, 'float32' or
        'bfloat16' (mixed precision: parameters, GroupNorm statistics, the
        pooled features and the logits stay float32).
    """

    num_classes: int
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    width: int = 64
    exits: Sequence[int] = (0, 1, 2)
    norm_groups: int = 8
    pixel_mean: Sequence[float] = (0.5,)
    pixel_std: Sequence[float] = (0.25,)
    exit_head: str = 'blocks'
    dtype: str = 'float32'

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ValueError(
                f'dtype {self.dtype!r} is not one of {", ".join(sorted(_DTYPES))}'
            )
        if self.exit_head not in _EXIT_HEADS:
            raise ValueError(
                f'exit_head {self.exit_head!r} is not one of {", ".join(_EXIT_HEADS)}'
            )
        if not self.stage_sizes or any(
            not isinstance(b, int) or b < 1 for b in self.stage_sizes
        ):
            raise ValueError(
                f'stage_sizes {tuple(self.stage_sizes)} must be one or more '
                'positive block counts, e.g. (2, 2, 2, 2)'
            )
        if self.width < 1 or self.norm_groups < 1:
            raise ValueError(
                f'width ({self.width}) and norm_groups ({self.norm_groups}) must be >= 1'
            )
        for c in self._normalised_channels():
            if c % min(self.norm_groups, c):
                raise ValueError(
                    f'GroupNorm over {c} channels cannot make {self.norm_groups} '
                    f'equal groups: choose width and norm_groups so that every '
                    f'stage width (width * 2^s) and bottleneck width '
                    f'(max(width * 2^s // 4, norm_groups)) is a multiple of '
                    'norm_groups (or smaller than it)'
                )
        last = len(self.stage_sizes) - 1
        multi_exit.check_exit_indices(self.exits, 'stage')
        if sorted(set(self.exits)) != list(self.exits) or any(
            not 0 <= s < last for s in self.exits
        ):
            raise ValueError(
                f'exits {tuple(self.exits)} must be increasing stage indices in '
                f'0..{last - 1} (the deepest exit after stage {last} is implicit)'
            )
        super().__post_init__()

    @property
    def num_exits(self) -> int:
        return len(self.exits) + 1

    def _channels(self, stage: int) -> int:
        return self.width * 2**stage

    def _normalised_channels(self) -> set[int]:
        """Every channel count a GroupNorm sees (stages and exit bottlenecks)."""
        stages = [self._channels(s) for s in range(len(self.stage_sizes))]
        mids = [max(c // 4, self.norm_groups) for c in stages]
        return set(stages + mids)

    def _head(self, h: Array, index: int, stage: int) -> tuple[Array, Array]:
        """Stage output [B, H, W, C] -> (logits [B, K], feature [B, C_last])."""
        last = len(self.stage_sizes) - 1
        dtype = _DTYPES[self.dtype]
        if self.exit_head in ('branch', 'pool') and stage < last:
            h = Branch(
                self._channels(last),
                2 ** (last - stage),
                self.exit_head == 'pool',
                self.norm_groups,
                dtype,
                name=f'exit{index}_branch',
            )(h)
        else:
            for j, s in enumerate(range(stage + 1, last + 1)):
                h = Bottleneck(
                    self._channels(s),
                    2,
                    self.norm_groups,
                    dtype,
                    name=f'exit{index}_bottleneck{j}',
                )(h)
        feature = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        logits = nn.Dense(self.num_classes, name=f'exit{index}_head')(feature)
        return logits, feature

    @nn.compact
    def __call__(
        self, images: Array, *, train: bool, upto: int | None = None, only_last=False
    ):
        """images uint8 or float [B, H, W, C] -> {'logits', 'features'} per exit.

        `upto=k` computes only the stages and heads the first k + 1 exits need;
        `only_last` skips the heads before exit k (the plain network's cost).
        """
        del train  # No dropout; GroupNorm behaves the same in both modes.
        last = multi_exit.exit_index(upto, self.num_exits)
        exit_stages = list(self.exits) + [len(self.stage_sizes) - 1]
        x = images.astype(jnp.float32)
        if images.dtype == jnp.uint8:
            x = x / 255.0
        x = (x - jnp.asarray(self.pixel_mean)) / jnp.asarray(self.pixel_std)
        dtype = _DTYPES[self.dtype]
        x = _conv(self.width, 3, 1, 'stem', dtype)(x)
        x = nn.relu(_norm(self.width, self.norm_groups, 'stem_norm', dtype)(x))
        out = {'logits': [], 'features': []}
        for s, blocks in enumerate(self.stage_sizes[: exit_stages[last] + 1]):
            for b in range(blocks):
                stride = 2 if s > 0 and b == 0 else 1
                x = BasicBlock(
                    self._channels(s),
                    stride,
                    self.norm_groups,
                    dtype,
                    name=f'stage{s}_block{b}',
                )(x)
            if s in exit_stages and (not only_last or s == exit_stages[last]):
                logits, feature = self._head(x, exit_stages.index(s), s)
                out['logits'].append(logits)
                out['features'].append(feature)
        return out
