"""DreamerV3's return estimates: lambda-returns in imagination and on replay."""

from keras import ops


def lambda_return(reward, cont, value, lam=0.95):
    """Lambda-returns of imagined trajectories, DreamerV3's `lambda_return`.

    With H + 1 states (index 0 the start), `R_H = v_H` and for i = H-1..0

        R_i = r_{i+1} + c_{i+1} * ((1 - lam) * v_{i+1} + lam * R_{i+1}),

    where `c` is the continue probability (the discount is folded into it:
    the continue head learns `(1 - terminal) * gamma`).

    Args:
        reward: predicted rewards `[N, H + 1]` (index i: arriving at state i).
        cont: continue probabilities `[N, H + 1]`.
        value: the bootstrap values `[N, H + 1]`.
        lam: the lambda of the return.

    Returns:
        `[N, H]`: the returns of states 0..H-1.

    Examples:
        >>> import numpy as np
        >>> ones = np.ones((1, 3), "float32")
        >>> np.asarray(lambda_return(ones, ones, 0 * ones, lam=1.0)).tolist()
        [[2.0, 1.0]]
    """
    reward = ops.cast(reward, "float32")
    cont = ops.cast(cont, "float32")
    value = ops.cast(value, "float32")
    steps = reward.shape[1] - 1
    returns = [value[:, -1]]
    for i in reversed(range(steps)):
        mixed = (1.0 - lam) * value[:, i + 1] + lam * returns[-1]
        returns.append(reward[:, i + 1] + cont[:, i + 1] * mixed)
    return ops.stack(returns[::-1][:-1], 1)


def replay_return(reward, is_last, is_terminal, bootstrap, gamma, lam=0.95):
    """Lambda-returns along replayed sequences, DreamerV3's replay value target.

    With `l = is_last`, `d = is_terminal`, `G_{T-1} = B_{T-1}` and for
    t = T-2..0

        G_t = r_{t+1} + gamma * (1 - d_{t+1})
              * ((1 - lam * (1 - l_{t+1})) * B_{t+1} + lam * (1 - l_{t+1}) * G_{t+1}),

    where `B_t` is the bootstrap value at step t (the imagined return from
    there), so the return never crosses an episode boundary.

    Args:
        reward: `[B, T]` rewards (`reward[t]` received on arriving at step t).
        is_last: `[B, T]` bool.
        is_terminal: `[B, T]` bool.
        bootstrap: `[B, T]` bootstrap values.
        gamma: the discount.
        lam: the lambda of the return.

    Returns:
        `[B, T - 1]`: the targets of steps 0..T-2.

    Examples:
        >>> import numpy as np
        >>> flags = np.zeros((1, 3), bool)
        >>> ones = np.ones((1, 3), "float32")
        >>> np.asarray(replay_return(ones, flags, flags, 0 * ones, 1.0, 1.0)).tolist()
        [[2.0, 1.0]]
    """
    reward = ops.cast(reward, "float32")
    live = 1.0 - ops.cast(is_terminal, "float32")
    cont = 1.0 - ops.cast(is_last, "float32")
    bootstrap = ops.cast(bootstrap, "float32")
    length = reward.shape[1]
    returns = [bootstrap[:, -1]]
    for t in reversed(range(length - 1)):
        mix = lam * cont[:, t + 1]
        nxt = (1.0 - mix) * bootstrap[:, t + 1] + mix * returns[-1]
        returns.append(reward[:, t + 1] + gamma * live[:, t + 1] * nxt)
    return ops.stack(returns[::-1][:-1], 1)
