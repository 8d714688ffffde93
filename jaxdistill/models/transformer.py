"""Encoder–decoder Transformer (pre- or post-LayerNorm) with an explicit KV cache.

`norm_position='pre'` (the default) normalises each sub-layer's input,
x + f(LN(x)); 'post' normalises after the residual sum, LN(x + f(x)), the
original Transformer's and fairseq's default order. Both keep the final
{encoder,decoder}/norm, so the parameter tree (and what composites slice) is
the same; with 'post' that norm re-normalises an already normalised output.

Parameter layout (chosen so later work can slice heads and FFN units):

    embed/embedding                      [V, D]      (share_embeddings=True)
    source_embed, target_embed, output_proj/kernel [D, V]   (otherwise)
    encoder/layers_i/self_attn/{query,key,value}/kernel  [D, H, Dh]
    encoder/layers_i/self_attn/out/kernel               [H, Dh, D]
    encoder/layers_i/ffn/wi/kernel [D, F], ffn/wo/kernel [F, D]
    decoder/layers_i/{self_attn,cross_attn,ffn}/...     (same shapes)
    {encoder,decoder}/norm                              final LayerNorm

Incremental decoding is pure: `init_cache` returns a pytree of zeros and
`decode_step` returns a new one. The cache is

    {'self': ({'k': [B, T, H, Dh], 'v': [B, T, H, Dh]},) * num_decoder_layers,
     'cross': (optional) same per layer with [B, Ls, H, Dh]}

When 'cross' is absent, `decode_step` recomputes the cross-attention keys and
values from `encoded` at every step; `precompute_cross` builds them once so a
decoding loop can add them to the cache (what `greedy_decode` does).
"""

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill import registry
from jaxdistill.errors import ConfigError
from jaxdistill.models import dropout as dropout_lib

Array = jax.Array
_XAVIER = nn.initializers.xavier_uniform()


# `model.dtype` by name: float16 is left out (it needs loss scaling).
COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of `Transformer`; hashable, so usable as a jit static."""

    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    d_ff: int = 256
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dropout_rate: float = 0.1  # residual and embedding dropout
    attention_dropout_rate: float = 0.0  # on attention weights
    activation_dropout_rate: float = 0.0  # inside the FFN, after ReLU
    # Random bits per dropout mask element: 32 is flax.linen.Dropout; 8 or 16
    # draw one 32-bit word per 4 or 2 elements and round the rates to
    # multiples of 2**-bits (models/dropout.py). Threefry is slow on CPU.
    dropout_mask_bits: int = 32
    max_len: int = 256  # longest source or target sequence
    share_embeddings: bool = True  # source, target and output projection
    # Compute dtype: jnp.float32, or jnp.bfloat16 for mixed precision on a
    # GPU/TPU (also given by name, 'float32' / 'bfloat16'). Parameters, the
    # attention softmax and the logits stay float32.
    dtype: Any = jnp.float32
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    # Width of each attention head; 0 = d_model // num_heads. Set by nested-width
    # composites (models/composite.py), whose slices keep the head width of the
    # full model while dropping heads.
    head_size: int = 0
    # 'pre': x + f(LN(x)) (stable at high learning rates without a long
    # warm-up); 'post': LN(x + f(x)) (the original Transformer, fairseq's
    # default, so the published Multi30k reference's order).
    norm_position: str = 'pre'

    def __post_init__(self):
        # A name, or a dtype object from Python (jnp.bfloat16, np.float32):
        # either must be one of COMPUTE_DTYPES.
        try:
            name = (
                self.dtype
                if isinstance(self.dtype, str)
                else jnp.dtype(self.dtype).name
            )
        except TypeError:
            name = None
        if name not in COMPUTE_DTYPES:
            raise ConfigError(
                f'model.dtype={self.dtype!r} must be one of '
                f'{", ".join(map(repr, COMPUTE_DTYPES))}.'
            )
        # Frozen dataclass: the name becomes the type (hashable, static).
        object.__setattr__(self, 'dtype', COMPUTE_DTYPES[name])
        if self.norm_position not in ('pre', 'post'):
            raise ConfigError(
                f"model.norm_position={self.norm_position!r} must be 'pre' or 'post'."
            )
        for key in (
            'vocab_size',
            'd_model',
            'num_heads',
            'd_ff',
            'max_len',
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f'model.{key}={getattr(self, key)} must be >= 1.')
        # 0 decoder layers: the encoder-only users (models/text_classifier.py).
        for key in ('num_encoder_layers', 'num_decoder_layers', 'head_size'):
            if getattr(self, key) < 0:
                raise ConfigError(f'model.{key}={getattr(self, key)} must be >= 0.')
        dropout_lib.check_mask_bits(self.dropout_mask_bits, 'model.dropout_mask_bits')
        for key in (
            'dropout_rate',
            'attention_dropout_rate',
            'activation_dropout_rate',
        ):
            rate = getattr(self, key)
            if not 0.0 <= rate < 1.0:
                raise ConfigError(
                    f'model.{key}={rate} must be in [0, 1) '
                    '(the fraction of units dropped).'
                )
            try:
                dropout_lib.effective_rate(rate, self.dropout_mask_bits)
            except ValueError as e:
                raise ConfigError(
                    f'model.{key}={rate} with '
                    f'model.dropout_mask_bits={self.dropout_mask_bits}: {e}'
                ) from None
        if not self.head_size and self.d_model % self.num_heads:
            raise ConfigError(
                f'd_model={self.d_model} is not divisible by '
                f'num_heads={self.num_heads}.'
            )

    @property
    def head_dim(self) -> int:
        return self.head_size or self.d_model // self.num_heads


SIZES: dict[str, dict] = {
    'tiny': dict(
        num_encoder_layers=4, num_decoder_layers=4, d_model=128, d_ff=256, num_heads=4
    ),
    'small': dict(
        num_encoder_layers=6, num_decoder_layers=6, d_model=256, d_ff=1024, num_heads=4
    ),
    'base': dict(
        num_encoder_layers=6, num_decoder_layers=6, d_model=512, d_ff=2048, num_heads=8
    ),
    'big': dict(
        num_encoder_layers=6,
        num_decoder_layers=6,
        d_model=1024,
        d_ff=4096,
        num_heads=16,
    ),
}


def make_transformer_config(size: str = 'tiny', **overrides) -> TransformerConfig:
    """A named size from `SIZES` with field overrides (vocab_size is required)."""
    if size not in SIZES:
        raise ConfigError(
            f'Unknown transformer size {size!r}; known sizes: {", ".join(SIZES)}.'
        )
    fields = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f'Unknown TransformerConfig field(s) {unknown}; '
            f'known: {", ".join(sorted(fields))}.'
        )
    if 'vocab_size' not in overrides:
        raise ConfigError('make_transformer_config needs vocab_size=...')
    return TransformerConfig(**{**SIZES[size], **overrides})


def sinusoidal_positions(max_len: int, d_model: int) -> np.ndarray:
    """[max_len, d_model] table: sin in the first half, cos in the second."""
    half = d_model // 2
    inv = np.exp(-math.log(10000.0) * np.arange(half) / max(half - 1, 1))
    angles = np.arange(max_len)[:, None] * inv[None, :]
    table = np.zeros((max_len, d_model), np.float32)
    table[:, :half] = np.sin(angles)
    table[:, half : 2 * half] = np.cos(angles)
    return table


def init_cache(config: TransformerConfig, batch_size: int, max_len: int) -> dict:
    """Zero self-attention cache: per decoder layer k, v [B, max_len, H, Dh].

    `max_len` target positions, at most `config.max_len` (the positions the
    model has encodings for). A loop of `decode_step` must keep its index
    below `max_len`: JAX clamps an index past it to the last slot, silently.
    """
    if not 1 <= max_len <= config.max_len:
        raise ValueError(
            f'init_cache: max_len={max_len} must be in 1..config.max_len '
            f'({config.max_len}), the target positions the model can encode.'
        )
    shape = (batch_size, max_len, config.num_heads, config.head_dim)
    layer = lambda: {
        'k': jnp.zeros(shape, config.dtype),
        'v': jnp.zeros(shape, config.dtype),
    }
    return {'self': tuple(layer() for _ in range(config.num_decoder_layers))}


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product attention with per-head projections."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        dense = functools.partial(
            nn.DenseGeneral,
            features=(c.num_heads, c.head_dim),
            dtype=c.dtype,
            kernel_init=_XAVIER,
        )
        self.query, self.key, self.value = dense(), dense(), dense()
        self.out = nn.DenseGeneral(
            features=c.d_model, axis=(-2, -1), dtype=c.dtype, kernel_init=_XAVIER
        )
        self.dropout = dropout_lib.Dropout(
            c.attention_dropout_rate, c.dropout_mask_bits
        )

    def key_value(self, context: Array) -> tuple[Array, Array]:
        """[B, Lk, D] -> k, v [B, Lk, H, Dh]."""
        return self.key(context), self.value(context)

    def attend(self, x: Array, k: Array, v: Array, mask: Array, train: bool) -> Array:
        """x [B, Lq, D], k/v [B, Lk, H, Dh], mask broadcastable to [B, H, Lq, Lk]."""
        q = self.query(x) / jnp.sqrt(self.config.head_dim).astype(self.config.dtype)
        logits = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32)
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.config.dtype)
        weights = self.dropout(weights, deterministic=not train)
        return self.out(jnp.einsum('bhqk,bkhd->bqhd', weights, v))

    def attend_one(self, x: Array, k: Array, v: Array, mask: Array) -> Array:
        """One query a row (decoding): x [B, 1, D], k/v [B, T, H, Dh] -> [B, 1, D].

        `mask` broadcastable to [B, 1, 1, T]. The same math as `attend`, as
        multiply-and-sum over the cache in its stored [B, T, H, Dh] layout:
        an einsum makes XLA transpose every cache every step, which on CPU
        cost most of a decoding step (a matrix-vector product is bound by
        memory either way).
        """
        c = self.config
        q = self.query(x)[:, 0] / jnp.sqrt(c.head_dim).astype(c.dtype)  # [B, H, Dh]
        logits = jnp.sum(q[:, None] * k, axis=-1).astype(jnp.float32)  # [B, T, H]
        logits = jnp.where(mask[:, 0, 0, :, None], logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=1).astype(c.dtype)
        out = jnp.sum(weights[..., None] * v, axis=1)  # [B, H, Dh]
        return self.out(out[:, None])

    def __call__(self, x: Array, context: Array, mask: Array, train: bool) -> Array:
        k, v = self.key_value(context)
        return self.attend(x, k, v, mask, train)


class FeedForward(nn.Module):
    """Dense(d_ff) -> ReLU -> dropout -> Dense(d_model)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        c = self.config
        h = nn.relu(nn.Dense(c.d_ff, dtype=c.dtype, kernel_init=_XAVIER, name='wi')(x))
        h = dropout_lib.Dropout(c.activation_dropout_rate, c.dropout_mask_bits)(
            h, deterministic=not train
        )
        return nn.Dense(c.d_model, dtype=c.dtype, kernel_init=_XAVIER, name='wo')(h)


def _residual(c: TransformerConfig, norm, sublayer, x: Array) -> Array:
    """One residual sub-layer with `norm` before it ('pre') or after the sum."""
    if c.norm_position == 'post':
        return norm(x + sublayer(x))
    return x + sublayer(norm(x))


class EncoderLayer(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool) -> Array:
        c = self.config
        drop = lambda y: dropout_lib.Dropout(c.dropout_rate, c.dropout_mask_bits)(
            y, deterministic=not train
        )
        attn = MultiHeadAttention(c, name='self_attn')
        x = _residual(
            c,
            nn.LayerNorm(dtype=c.dtype, name='ln_self'),
            lambda h: drop(attn(h, h, mask, train)),
            x,
        )
        ffn = FeedForward(c, name='ffn')
        return _residual(
            c,
            nn.LayerNorm(dtype=c.dtype, name='ln_ffn'),
            lambda h: drop(ffn(h, train)),
            x,
        )


class Encoder(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, train: bool) -> Array:
        """x [B, Ls, D] embedded, mask [B, 1, 1, Ls] -> [B, Ls, D]."""
        for i in range(self.config.num_encoder_layers):
            x = EncoderLayer(self.config, name=f'layers_{i}')(x, mask, train)
        return nn.LayerNorm(dtype=self.config.dtype, name='norm')(x)


class DecoderLayer(nn.Module):
    config: TransformerConfig

    def setup(self):
        c = self.config
        self.ln_self = nn.LayerNorm(dtype=c.dtype)
        self.self_attn = MultiHeadAttention(c)
        self.ln_cross = nn.LayerNorm(dtype=c.dtype)
        self.cross_attn = MultiHeadAttention(c)
        self.ln_ffn = nn.LayerNorm(dtype=c.dtype)
        self.ffn = FeedForward(c)
        self.dropout = dropout_lib.Dropout(c.dropout_rate, c.dropout_mask_bits)

    def __call__(self, y, encoded, self_mask, cross_mask, train: bool) -> Array:
        """y [B, Lt, D], encoded [B, Ls, D] -> [B, Lt, D]."""
        c = self.config
        drop = lambda z: self.dropout(z, deterministic=not train)
        y = _residual(
            c, self.ln_self, lambda h: drop(self.self_attn(h, h, self_mask, train)), y
        )
        y = _residual(
            c,
            self.ln_cross,
            lambda h: drop(self.cross_attn(h, encoded, cross_mask, train)),
            y,
        )
        return _residual(c, self.ln_ffn, lambda h: drop(self.ffn(h, train)), y)

    def cross_key_value(self, encoded: Array) -> dict:
        """encoded [B, Ls, D] -> {'k', 'v'} [B, Ls, H, Dh]."""
        k, v = self.cross_attn.key_value(encoded)
        return {'k': k, 'v': v}

    def step(self, y, index, layer_cache, cross_kv, cross_mask):
        """One position: y [B, 1, D]; cache k/v [B, T, H, Dh] -> (y, new cache)."""
        c = self.config
        new = {}

        def self_attention(h):
            k, v = self.self_attn.key_value(h)
            new['k'] = jax.lax.dynamic_update_slice_in_dim(
                layer_cache['k'], k.astype(layer_cache['k'].dtype), index, axis=1
            )
            new['v'] = jax.lax.dynamic_update_slice_in_dim(
                layer_cache['v'], v.astype(layer_cache['v'].dtype), index, axis=1
            )
            mask = (jnp.arange(new['k'].shape[1]) <= index)[None, None, None, :]
            return self.self_attn.attend_one(h, new['k'], new['v'], mask)

        y = _residual(c, self.ln_self, self_attention, y)
        y = _residual(
            c,
            self.ln_cross,
            lambda h: self.cross_attn.attend_one(
                h, cross_kv['k'], cross_kv['v'], cross_mask
            ),
            y,
        )
        return _residual(c, self.ln_ffn, lambda h: self.ffn(h, False), y), new


class Decoder(nn.Module):
    config: TransformerConfig

    def setup(self):
        c = self.config
        self.layers = [DecoderLayer(c) for _ in range(c.num_decoder_layers)]
        self.norm = nn.LayerNorm(dtype=c.dtype)

    def __call__(self, y, encoded, self_mask, cross_mask, train: bool) -> Array:
        """y [B, Lt, D] embedded -> [B, Lt, D] normalised hidden states."""
        states = self.states(y, encoded, self_mask, cross_mask, train, len(self.layers))
        return self.norm(states[-1])

    def states(self, y, encoded, self_mask, cross_mask, train: bool, upto: int):
        """The un-normalised output [B, Lt, D] of each of the first `upto` layers."""
        out = []
        for layer in self.layers[:upto]:
            y = layer(y, encoded, self_mask, cross_mask, train)
            out.append(y)
        return out

    def cross_key_value(self, encoded: Array) -> tuple:
        return tuple(layer.cross_key_value(encoded) for layer in self.layers)

    def step(self, y, index, cache, cross_mask):
        """y [B, 1, D] -> ([B, 1, D], new cache); cache must hold 'cross'."""
        new_self = []
        for i, layer in enumerate(self.layers):
            y, layer_cache = layer.step(
                y, index, cache['self'][i], cache['cross'][i], cross_mask
            )
            new_self.append(layer_cache)
        return self.norm(y), {**cache, 'self': tuple(new_self)}


def _padding_mask(inputs: Array, pad_id: int) -> Array:
    """[B, Ls] -> bool [B, 1, 1, Ls], True at real tokens."""
    return (inputs != pad_id)[:, None, None, :]


def output_table(config: TransformerConfig, params) -> Array:
    """The [V, D] matrix of `Transformer.logits` (logits = states @ it.T),
    from the model's parameters: the shared embedding, or the output kernel
    transposed."""
    if config.share_embeddings:
        return params['embed']['embedding']
    return params['output_proj']['kernel'].T


@registry.register('model', 'transformer')
class Transformer(nn.Module):
    """Encoder–decoder Transformer (pre- or post-LN, sinusoidal positions)."""

    config: TransformerConfig

    def setup(self):
        c = self.config
        embed = functools.partial(
            nn.Embed,
            c.vocab_size,
            c.d_model,
            dtype=c.dtype,
            embedding_init=nn.initializers.normal(stddev=c.d_model**-0.5),
        )
        if c.share_embeddings:
            self.embed = embed()
        else:
            self.source_embed, self.target_embed = embed(), embed()
            # float32 whatever the compute dtype: the logits are (`logits`).
            self.output_proj = nn.Dense(
                c.vocab_size, use_bias=False, dtype=jnp.float32, kernel_init=_XAVIER
            )
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.embed_dropout = dropout_lib.Dropout(c.dropout_rate, c.dropout_mask_bits)
        self.positions = jnp.asarray(sinusoidal_positions(c.max_len, c.d_model))

    def _embed(self, tokens: Array, table, start, train: bool) -> Array:
        """tokens [B, L] -> [B, L, D]: scaled embedding + positions from `start`."""
        c = self.config
        if tokens.shape[1] > c.max_len:
            raise ValueError(
                f'Sequence length {tokens.shape[1]} exceeds max_len={c.max_len}.'
            )
        x = table(tokens) * jnp.sqrt(c.d_model).astype(c.dtype)
        pos = jax.lax.dynamic_slice_in_dim(self.positions, start, tokens.shape[1])
        x = x + pos.astype(c.dtype)[None]
        return self.embed_dropout(x, deterministic=not train)

    def _source_table(self):
        return self.embed if self.config.share_embeddings else self.source_embed

    def _target_table(self):
        return self.embed if self.config.share_embeddings else self.target_embed

    def logits(self, h: Array) -> Array:
        """Normalised decoder states [..., D] -> float32 logits [..., V].

        Computed on the tokens flattened to [N, D]: with [B, L, D], XLA:CPU
        transposes the [B, L, V] logits gradient for the embedding gradient
        by a slow path whenever L is not a power of two (up to 5x slower, a
        third of the whole train step at L=24).

        The output layer computes in float32 whatever `config.dtype` is (as
        Flax's WMT example does): with bfloat16 products its log-probabilities
        were off by up to 0.05, which distillation targets and beam scores
        read; the fused losses (`losses.linear_cross_entropy`,
        `linear_distill_cross_entropy`) upcast too, so both paths agree.
        """
        flat = h.reshape(-1, h.shape[-1]).astype(jnp.float32)
        if self.config.share_embeddings:
            logits = jnp.dot(flat, self.embed.embedding.astype(jnp.float32).T)
        else:
            logits = self.output_proj(flat)
        return logits.reshape(h.shape[:-1] + (-1,))

    def encode(self, inputs: Array, *, train: bool = False) -> Array:
        """inputs int [B, Ls] -> encoded [B, Ls, D]."""
        x = self._embed(inputs, self._source_table(), 0, train)
        return self.encoder(x, _padding_mask(inputs, self.config.pad_id), train)

    def _decoder_args(self, inputs, decoder_inputs, train: bool) -> tuple:
        """(embedded decoder inputs, causal mask, cross mask) for the decoder."""
        y = self._embed(decoder_inputs, self._target_table(), 0, train)
        causal = nn.make_causal_mask(decoder_inputs, dtype=jnp.bool_)
        return y, causal, _padding_mask(inputs, self.config.pad_id)

    def decode(self, encoded, inputs, decoder_inputs, *, train: bool = False):
        """encoded [B, Ls, D], inputs [B, Ls], decoder_inputs [B, Lt] -> [B, Lt, V]."""
        y, causal, cross_mask = self._decoder_args(inputs, decoder_inputs, train)
        return self.logits(self.decoder(y, encoded, causal, cross_mask, train))

    def _shift_right(self, targets: Array) -> Array:
        """Teacher-forcing decoder inputs: BOS, then targets without the last."""
        bos = jnp.full_like(targets[:, :1], self.config.bos_id)
        return jnp.concatenate([bos, targets[:, :-1]], axis=1)

    def features(self, inputs: Array, targets: Array, *, train: bool) -> Array:
        """Teacher forcing up to the logits: the normalised decoder states
        [B, Lt, D] that `logits` maps to [B, Lt, V] (with `output_table`)."""
        encoded = self.encode(inputs, train=train)
        y, causal, cross_mask = self._decoder_args(
            inputs, self._shift_right(targets), train
        )
        return self.decoder(y, encoded, causal, cross_mask, train)

    def __call__(self, inputs: Array, targets: Array, *, train: bool) -> Array:
        """Teacher forcing: inputs [B, Ls], targets [B, Lt] -> logits [B, Lt, V]."""
        return self.logits(self.features(inputs, targets, train=train))

    def decoder_states(
        self, inputs: Array, targets: Array, *, train: bool, upto: int | None = None
    ) -> list:
        """Teacher forcing up to decoder layer `upto` (default all): each
        layer's un-normalised output [B, Lt, D], bottom first (decoder exits)."""
        encoded = self.encode(inputs, train=train)
        y, causal, cross_mask = self._decoder_args(
            inputs, self._shift_right(targets), train
        )
        upto = self.config.num_decoder_layers if upto is None else upto
        return self.decoder.states(y, encoded, causal, cross_mask, train, upto)

    def init_cache(self, batch_size: int, max_len: int) -> dict:
        """Zero cache; see the module docstring. Same as `init_cache(config, ...)`."""
        return init_cache(self.config, batch_size, max_len)

    def precompute_cross(self, encoded: Array) -> tuple:
        """encoded [B, Ls, D] -> per decoder layer {'k', 'v'} [B, Ls, H, Dh]."""
        return self.decoder.cross_key_value(encoded)

    def decode_step(self, encoded, inputs, token, index, cache):
        """token int [B] at position `index` -> (logits [B, V], new cache).

        `cache` comes from `init_cache` (optionally with cache['cross'] =
        `precompute_cross(encoded)`); positions < index must already be filled,
        and `index` must be below the cache's length (checked when it is a
        Python int; a traced index past it would be clamped to the last slot).
        """
        length = cache['self'][0]['k'].shape[1]
        if isinstance(index, int) and not 0 <= index < length:
            raise ValueError(
                f'decode_step: index={index} is outside the cache of {length} '
                'positions (init_cache(..., max_len)).'
            )
        if 'cross' not in cache:
            full = {**cache, 'cross': self.precompute_cross(encoded)}
            logits, new = self.decode_step(encoded, inputs, token, index, full)
            return logits, {k: v for k, v in new.items() if k != 'cross'}
        y = self._embed(token[:, None], self._target_table(), index, False)
        cross_mask = _padding_mask(inputs, self.config.pad_id)
        h, new_cache = self.decoder.step(y, index, cache, cross_mask)
        return self.logits(h[:, 0]), new_cache


def count_params(params) -> int:
    """Total number of scalars in a parameter pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


def flops_per_token(config: TransformerConfig, src_len: int, tgt_len: int) -> dict:
    """Analytic training (forward + backward) matmul FLOPs per target token.

    Each matmul of an [m, k] by [k, n] costs 2·m·k·n forward and twice that
    backward, so a dense weight with N entries applied to one token costs 6·N
    (the usual 6·N rule). Attention adds the score (QKᵀ) and value (AV)
    matmuls: 2·2·L·D forward per query token against L keys (causal masking
    is not discounted). Encoder work on `src_len` tokens is spread over the
    `tgt_len` target tokens of the same pair. Embedding lookups, layer norms,
    softmax and biases are not counted.

    Returns:
      dict of floats: 'encoder_dense', 'encoder_attention', 'decoder_dense',
      'decoder_attention', 'logits', 'total' (all forward+backward),
      'forward' (= total / 3), and 'source_side': the part of 'total' that
      grows with the source tokens (the encoder, and the decoder's
      cross-attention keys and values).
    """
    c = config
    d, f = c.d_model, c.d_ff
    a = c.num_heads * c.head_dim  # Width of the attention projections.
    ratio = src_len / tgt_len
    enc_dense = c.num_encoder_layers * (4 * d * a + 2 * d * f) * 6 * ratio
    enc_attn = c.num_encoder_layers * 4 * src_len * a * 3 * ratio
    # Decoder: self q,k,v,o + cross q,o + FFN per target token; cross k,v per
    # source token.
    cross_kv = c.num_decoder_layers * 6 * 2 * d * a * ratio
    dec_dense = c.num_decoder_layers * 6 * (6 * d * a + 2 * d * f) + cross_kv
    dec_attn = c.num_decoder_layers * 4 * (tgt_len + src_len) * a * 3
    logits = 6 * d * c.vocab_size
    total = enc_dense + enc_attn + dec_dense + dec_attn + logits
    return {
        'encoder_dense': float(enc_dense),
        'encoder_attention': float(enc_attn),
        'decoder_dense': float(dec_dense),
        'decoder_attention': float(dec_attn),
        'logits': float(logits),
        'total': float(total),
        'forward': float(total / 3),
        'source_side': float(enc_dense + enc_attn + cross_kv),
    }


def infer_config(params, base: TransformerConfig) -> TransformerConfig:
    """`base` with the architecture read off a plain parameter tree's shapes.

    Layer counts, d_model, heads, head width and FFN units come from `params`
    (e.g. one capacity of a composite, or an extracted checkpoint); vocab,
    dropout, max_len and ids stay `base`'s.
    """
    count = lambda stack: sum(k.startswith('layers_') for k in params[stack])
    layer = params['encoder']['layers_0']
    d_model, heads, head_dim = layer['self_attn']['query']['kernel'].shape
    return dataclasses.replace(
        base,
        d_model=d_model,
        num_heads=heads,
        head_size=0 if heads * head_dim == d_model else head_dim,
        d_ff=layer['ffn']['wi']['kernel'].shape[1],
        num_encoder_layers=count('encoder'),
        num_decoder_layers=count('decoder'),
        share_embeddings='embed' in params,
    )
