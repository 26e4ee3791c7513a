"""The convolution rewrites of the encoder's and decoder's layers.

Each computes the function of a plain convolution (and upsampling or
pooling) with the same weights, up to float rounding, in a cheaper shape:
`upsample_conv2d_same` folds a nearest 2x upsampling into the convolution,
`conv2d_same_pooled_blocks` convolves the 2x2 space-to-depth image so that
pooling is a max over blocks. `conv2d_same` and `pool_conv_on_blocks` ask
the backend (`keras_dreamer.backend`) for its kernel and its rule; the
measurements behind the rules are in `docs/backends.md`.
`SameConv2D`, `UpsampleConv2D` and `PoolConv2D` (`layers.common`) use them.
"""

import numpy as np
from keras import ops

from keras_dreamer import backend


def conv2d_same(x, kernel):
    """A stride-1, 'same'-padded 2-D convolution, channels last.

    `keras.ops.conv`, except that the backend may compute its kernel
    gradient its own way (on a JAX CPU as matrix products, see
    `keras_dreamer.backend.jax.matmul_kernel_grad`); the forward values are
    the same either way.

    Args:
        x: `[N, H, W, C]` inputs.
        kernel: `[K, K, C, F]` weights.

    Returns:
        `[N, H, W, F]`.

    Examples:
        >>> import numpy as np
        >>> x = np.ones((1, 4, 4, 1), "float32")
        >>> y = conv2d_same(x, np.ones((3, 3, 1, 2), "float32"))
        >>> np.asarray(y)[0, :2, :2, 0].tolist()
        [[4.0, 6.0], [6.0, 9.0]]
    """
    return backend.conv2d_same(x, kernel)


def pool_conv_on_blocks(height, width, channels):
    """Whether a 'same' convolution + 2x2 max pooling of a `[N, height, width,
    channels]` input runs as `conv2d_same_pooled_blocks` (`PoolConv2D`).

    Both ways compute the same function; which is faster depends on the
    backend's convolution kernels, so the backend's rule decides
    (`pool_conv_on_blocks` of `keras_dreamer.backend.jax` or
    `.tensorflow`). The choice is logged once per process (logger
    `keras_dreamer`, level INFO).

    Args:
        height: input height.
        width: input width.
        channels: input channels.

    Returns:
        A bool.

    Examples:
        >>> pool_conv_on_blocks(64, 64, 3), pool_conv_on_blocks(8, 8, 512)
        (True, False)
    """
    return backend.pool_conv_on_blocks(height, width, channels)


def upsample2(x):
    """Nearest-neighbour 2x upsampling of `[N, H, W, C]`.

    Args:
        x: tensor `[N, H, W, C]` with static H, W and C.

    Returns:
        Tensor `[N, 2H, 2W, C]`, each pixel repeated in a 2x2 block.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(4, dtype="float32").reshape(1, 2, 2, 1)
        >>> np.asarray(upsample2(x))[0, :, :, 0].astype(int).tolist()
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    """
    _, h, w, c = x.shape
    x = ops.broadcast_to(x[:, :, None, :, None, :], (ops.shape(x)[0], h, 2, w, 2, c))
    return ops.reshape(x, (-1, 2 * h, 2 * w, c))


def upsample_fold(size):
    """How a 'same' convolution of a 2x nearest-upsampled image reads the
    original image.

    Output pixel `2r + a` (parity `a`) of a size-`size` 'same' convolution
    (padding `(size - 1) // 2` before) reads upsampled pixel `2r + a + i - lo`
    at kernel tap `i`, which is original pixel `r + (a + i - lo) // 2`. The
    taps of one parity that read the same original pixel can be summed into
    one weight first.

    Args:
        size: the kernel size along one axis.

    Returns:
        `(fold, before, after)`: `fold[a, d, i] = 1` when tap `i` of parity
        `a` reads original offset `d - before`, a float32 numpy array
        `[2, before + after + 1, size]`; the original image needs `before`
        pixels of zero padding before and `after` after.

    Examples:
        >>> fold, before, after = upsample_fold(5)
        >>> fold[0].astype(int).tolist(), before, after
        ([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], 1, 1)
        >>> fold[1].astype(int).tolist()
        [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]
    """
    # Upsampled pixel 2(r + d) + p is original pixel r + d whatever its phase p.
    fold, before, after = space_to_depth_fold(size)
    return fold.sum(axis=2), before, after


def upsample_conv2d_same(x, kernel):
    """`conv2d_same(upsample2(x), kernel)`, computed on the low-resolution `x`.

    A nearest 2x upsampling followed by a KxK 'same' convolution is, exactly,
    a smaller convolution of `x` (3x3 for K = 5) whose 4 x F outputs are the
    four output pixels of each 2x2 block (each with its kernel taps summed
    per original pixel, see `upsample_fold`), rearranged to `[N, 2H, 2W, F]`.
    For K = 5 that is 36 multiply-adds per input pixel and channel pair where
    the upsampled convolution does 100 (2.8x fewer), on a 4x wider output;
    the values agree up to float rounding, and the gradients flow to the same
    `kernel`.

    Args:
        x: `[N, H, W, C]` inputs (the image before upsampling).
        kernel: `[KH, KW, C, F]` weights of the convolution after upsampling.

    Returns:
        `[N, 2H, 2W, F]`.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(8, dtype="float32").reshape(2, 2, 2, 1)
        >>> k = np.linspace(-1, 1, 50, dtype="float32").reshape(5, 5, 1, 2)
        >>> y = upsample_conv2d_same(x, k)
        >>> bool(np.allclose(y, conv2d_same(upsample2(x), k), atol=1e-5))
        True
    """
    kh, kw, channels, filters = kernel.shape
    fold_h, top, bottom = upsample_fold(kh)
    fold_w, left, right = upsample_fold(kw)
    folded = _fold_kernel("adi,bej,ijco->decabo", fold_h, fold_w, kernel)
    folded = ops.reshape(folded, (*folded.shape[:3], 4 * filters))
    y = _padded_conv(x, folded, (top, bottom), (left, right))
    _, h, w, _ = y.shape
    y = ops.reshape(y, (-1, h, w, 2, 2, filters))
    y = ops.transpose(y, (0, 1, 3, 2, 4, 5))
    return ops.reshape(y, (-1, 2 * h, 2 * w, filters))


def max_pool2(x):
    """2x2 max pooling (stride 2) of `[N, H, W, C]` with even H and W.

    Written as a reshape and a max so its gradient is a cheap mask rather than
    XLA's select-and-scatter, which is slow on CPU.

    Args:
        x: tensor `[N, H, W, C]` with static, even H and W.

    Returns:
        Tensor `[N, H / 2, W / 2, C]`.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
        >>> np.asarray(max_pool2(x))[0, :, :, 0].astype(int).tolist()
        [[5, 7], [13, 15]]
    """
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, c))
    return ops.max(x, axis=(2, 4))


def space_to_depth_fold(size):
    """How a size-`size` 'same' convolution reads a 2x2 space-to-depth image.

    Output pixel `2r + a` (parity `a`) reads input pixel `2r + a + i - lo` at
    kernel tap `i` (`lo = (size - 1) // 2`), which is pixel `r + d` of the
    space-to-depth image at phase `p`, where `2d + p = a + i - lo`.

    Args:
        size: the kernel size along one axis.

    Returns:
        `(fold, before, after)`: `fold[a, d, p, i] = 1` when tap `i` of
        parity `a` reads offset `d - before` at phase `p`, a float32 numpy
        array `[2, before + after + 1, 2, size]`, and the zero padding the
        space-to-depth image needs before and after.

    Examples:
        >>> fold, before, after = space_to_depth_fold(5)
        >>> fold.shape, before, after
        ((2, 3, 2, 5), 1, 1)
        >>> [int(i) for i in fold[1].reshape(6, 5).argmax(-1)]
        [0, 0, 1, 2, 3, 4]
    """
    lo = (size - 1) // 2
    steps = [[parity + i - lo for i in range(size)] for parity in (0, 1)]
    before = -min(step // 2 for row in steps for step in row)
    after = max(step // 2 for row in steps for step in row)
    fold = np.zeros((2, before + after + 1, 2, size), np.float32)
    for parity, row in enumerate(steps):
        for i, step in enumerate(row):
            fold[parity, step // 2 + before, step % 2, i] = 1.0
    return fold, before, after


def conv2d_same_pooled_blocks(x, kernel):
    """The four outputs of each 2x2 block of `conv2d_same(x, kernel)`, computed
    as one convolution of the space-to-depth image of `x`.

    A stride-1 KxK 'same' convolution is, exactly, a smaller convolution (3x3
    for K = 5) of the image rearranged into 2x2 blocks (`[H/2, W/2, 4C]`)
    whose 4F outputs are the four pixels of each block (`space_to_depth_fold`).
    It does 1.44x the multiply-adds for K = 5, with 4x the input and output
    channels: for an image input of 1 to 4 channels that is much faster than
    the convolution itself. `max_pool2` of the convolution is then a max over
    the block axis, with no spatial rearrangement.

    Args:
        x: `[N, H, W, C]` inputs, H and W even.
        kernel: `[KH, KW, C, F]` weights.

    Returns:
        `[N, H/2, W/2, 4, F]`: block position (row-major over the 2x2 block)
        before channels.

    Examples:
        >>> import numpy as np
        >>> x = np.linspace(-1, 1, 96, dtype="float32").reshape(2, 4, 4, 3)
        >>> k = np.linspace(-1, 1, 150, dtype="float32").reshape(5, 5, 3, 2)
        >>> pooled = np.asarray(conv2d_same_pooled_blocks(x, k)).max(axis=3)
        >>> bool(np.allclose(pooled, max_pool2(conv2d_same(x, k)), atol=1e-5))
        True
    """
    kh, kw, channels, filters = kernel.shape
    _, h, w, _ = x.shape
    fold_h, top, bottom = space_to_depth_fold(kh)
    fold_w, left, right = space_to_depth_fold(kw)
    folded = _fold_kernel("adpi,beqj,ijco->depqcabo", fold_h, fold_w, kernel)
    folded = ops.reshape(folded, (*folded.shape[:2], 4 * channels, 4 * filters))
    x = ops.reshape(x, (-1, h // 2, 2, w // 2, 2, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    x = ops.reshape(x, (-1, h // 2, w // 2, 4 * channels))
    y = _padded_conv(x, folded, (top, bottom), (left, right))
    return ops.reshape(y, (-1, h // 2, w // 2, 4, filters))


def _fold_kernel(equation, fold_h, fold_w, kernel):
    kernel = ops.convert_to_tensor(kernel)
    return ops.einsum(
        equation,
        ops.cast(fold_h, kernel.dtype),
        ops.cast(fold_w, kernel.dtype),
        kernel,
    )


def _padded_conv(x, kernel, rows, cols):
    """A stride-1 convolution of `x` zero-padded by `rows` / `cols` (before,
    after) pixels: `conv2d_same` when that is its 'same' padding."""
    centred = rows[0] == rows[1] == cols[0] == cols[1]
    if centred and kernel.shape[0] == kernel.shape[1] == 2 * rows[0] + 1:
        return conv2d_same(x, kernel)
    x = ops.pad(x, ((0, 0), rows, cols, (0, 0)))
    return ops.conv(x, kernel, strides=1, padding="valid")
