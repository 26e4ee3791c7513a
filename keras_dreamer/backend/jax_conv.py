"""A JAX 2-D convolution whose kernel gradient runs as matrix products.

XLA's CPU backend computes the kernel gradient of a convolution (the
"backward filter" convolution) far slower than the forward pass. Written as
matrix products instead, over chunks of the batch (the shifted copies of a
chunk's input side by side, times the output gradient), it is faster for
large layers (measurements: `docs/backends.md`; compare on your CPU with
`benchmarks/conv_variants.py --variants nhwc nhwc_matmul_grad`). The forward
pass and the input gradient stay XLA's convolutions.

`keras_dreamer.backend.jax.conv2d_same` decides when to use it.
"""

import functools

import jax
import jax.numpy as jnp

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Rows (frames x pixels) of one chunk's patch matrix: large enough for an
# efficient matrix product, small enough to stay in cache-sized blocks.
CHUNK_ROWS = 8192


def _conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSIONS
    )


def _patches(x, size, pads, mirrored=False):
    """`[N * H * W, size * size * C]`: each pixel's neighbourhood, row-major
    over the kernel offsets (`mirrored`: offset (i, j) read at (-i, -j))."""
    n, h, w, c = x.shape
    lo, hi = pads
    padded = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
    last = size - 1
    shifted = []
    for i in range(size):
        for j in range(size):
            r, s = (last - i, last - j) if mirrored else (i, j)
            shifted.append(padded[:, r : r + h, s : s + w, :])
    return jnp.concatenate(shifted, axis=-1).reshape(n * h * w, size * size * c)


def chunk_frames(frames, height, width, rows=CHUNK_ROWS):
    """How many frames one chunk of the kernel gradient takes.

    Args:
        frames: frames in the batch (N).
        height: frame height.
        width: frame width.
        rows: the most pixels (rows of the patch matrix) per chunk.

    Returns:
        The largest divisor of `frames` whose chunk has at most `rows`
        pixels (at least 1).

    Examples:
        >>> chunk_frames(1024, 32, 32), chunk_frames(7, 64, 64)
        (8, 1)
    """
    per_frame = height * width
    best = 1
    for chunk in range(1, frames + 1):
        if frames % chunk == 0 and chunk * per_frame <= rows:
            best = chunk
    return best


def kernel_grad(x, grad, size):
    """The gradient of `sum(conv(x, K) * grad)` with respect to K.

    One matrix product per chunk of frames, with the patches taken from the
    side with fewer channels: `patches(x).T @ grad` (K*K*C columns) when the
    layer widens or keeps its width, `patches'(grad).T @ x` (K*K*F columns,
    the kernel offsets mirrored) when it narrows, e.g. a decoder's output.

    Args:
        x: the input, `[N, H, W, C]`.
        grad: the output gradient, `[N, H, W, F]`.
        size: the (square) kernel size.

    Returns:
        `[size, size, C, F]`, as XLA's kernel gradient.

    Examples:
        >>> import numpy as np
        >>> x, grad = np.ones((2, 4, 4, 1), "float32"), np.ones((2, 4, 4, 3), "float32")
        >>> np.asarray(kernel_grad(x, grad, 3))[:, :, 0, 0].tolist()
        [[18.0, 24.0, 18.0], [24.0, 32.0, 24.0], [18.0, 24.0, 18.0]]
    """
    n, h, w, c = x.shape
    f = grad.shape[-1]
    chunk = chunk_frames(n, h, w)
    narrows = f < c
    if narrows:
        # x at (r, s) meets grad at (r - i + lo, s - j + lo): the patches of
        # grad padded the other way round, read at the mirrored offsets.
        lo = (size - 1) // 2
        patch_side, other = grad, x
        pads = (size - 1 - lo, lo)
    else:
        patch_side, other = x, grad
        pads = ((size - 1) // 2, size - 1 - (size - 1) // 2)
    width = patch_side.shape[-1]
    patch_chunks = patch_side.reshape(n // chunk, chunk, h, w, width)
    other_chunks = other.reshape(n // chunk, chunk * h * w, other.shape[-1])

    def add_chunk(total, pair):
        patch_chunk, other_chunk = pair
        patches = _patches(patch_chunk, size, pads, mirrored=narrows)
        return total + patches.T @ other_chunk, None

    dtype = jnp.promote_types(x.dtype, grad.dtype)
    init = jnp.zeros((size * size * width, other.shape[-1]), dtype)
    total, _ = jax.lax.scan(add_chunk, init, (patch_chunks, other_chunks))
    if narrows:  # [size, size, F, C] -> [size, size, C, F]
        return total.reshape(size, size, f, c).transpose(0, 1, 3, 2).astype(x.dtype)
    return total.reshape(size, size, c, f).astype(x.dtype)


@functools.partial(jax.custom_vjp)
def conv2d_same(x, kernel):
    """Stride-1 'same' convolution, NHWC x HWIO, with a square kernel; its
    kernel gradient is `kernel_grad`, its input gradient XLA's.

    Args:
        x: `[N, H, W, C]` inputs.
        kernel: `[K, K, C, F]` weights.

    Returns:
        `[N, H, W, F]`, as `jax.lax.conv_general_dilated` with "SAME".

    Examples:
        >>> import numpy as np
        >>> y = conv2d_same(np.ones((1, 3, 3, 1), "float32"),
        ...                 np.ones((3, 3, 1, 1), "float32"))
        >>> np.asarray(y)[0, :, :, 0].tolist()
        [[4.0, 6.0, 4.0], [6.0, 9.0, 6.0], [4.0, 6.0, 4.0]]
    """
    return _conv(x, kernel)


def _forward(x, kernel):
    return _conv(x, kernel), (x, kernel)


def _backward(saved, grad):
    x, kernel = saved
    _, input_vjp = jax.vjp(lambda inputs: _conv(inputs, kernel), x)
    (x_grad,) = input_vjp(grad)
    k_grad = kernel_grad(x, grad, kernel.shape[0]).astype(kernel.dtype)
    return x_grad, k_grad


conv2d_same.defvjp(_forward, _backward)
