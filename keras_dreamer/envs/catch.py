"""Catch: the embedded default environment (pure numpy, no download).

A ball falls from the top of the screen, drifting sideways and bouncing off
the side walls; the agent moves a paddle along the bottom to catch it. The
game is built to be learnable by a small world model in minutes on a CPU:
black background, three high-contrast objects several pixels big, and
dynamics that two frames determine (constant ball velocity, wall bounces,
paddle moved by the action).

The game logic runs on a fixed 64x64 grid and is only drawn at `size`, so
every size plays the same game for a given seed.
"""

import numpy as np

from keras_dreamer.envs.base import Env
from keras_dreamer.envs.base import image_box
from keras_dreamer.spaces import Discrete

GRID = 64
BALL = 6
TOP = 8
PADDLE_Y = 58
PADDLE_HEIGHT = 4
PIP = 4
BALL_DX = (-3, -2, -1, 1, 2, 3)
BALL_DY = (2, 3)
BALL_COLOR = (255, 96, 32)
PADDLE_COLOR = (64, 160, 255)
PIP_COLOR = (64, 224, 64)
NOOP, LEFT, RIGHT = 0, 1, 2


class Catch(Env):
    """Catch a falling, bouncing ball with a paddle.

    - Observation: `{"image": uint8 (size, size, 3)}`: an orange ball, a blue
      paddle at the bottom and one green pip per remaining life at the top
      left, on black.
    - Actions: `Discrete(3)`: 0 stay, 1 left, 2 right (the paddle moves
      `paddle_speed` grid cells per step).
    - Dynamics: each ball starts at a random column near the top with a
      random sideways speed (-3..3, never 0) and fall speed (2 or 3), and
      bounces off the side walls. On reaching the paddle's row it is caught
      or missed; the next step a new ball appears.
    - Reward: +1 on the step a ball is caught, -1 when one is missed.
    - Episode end: terminal (`is_terminal`) after `lives` misses; truncated
      (`is_last` without `is_terminal`) after `max_steps` steps.

    Deterministic for a given seed; the logic is a few integer updates and
    the drawing a few array slices, so it runs at tens of thousands of steps
    per second on one core.

    Args:
        size: image height and width in pixels (64 by default; 32 or 16 for
            fast tests, down to 16).
        lives: misses that end the episode.
        max_steps: steps after which the episode is truncated.
        paddle_width: paddle width in grid cells (of 64).
        paddle_speed: paddle move per step in grid cells.
        ball_size: ball width and height in grid cells (of 64).
        seed: int seed for the ball positions and speeds, or None.

    Examples:
        >>> env = Catch(size=32, seed=0)
        >>> obs = env.reset()
        >>> obs["image"].shape, obs["image"].dtype.name
        ((32, 32, 3), 'uint8')
        >>> obs = env.step(2)  # move right
        >>> float(obs["reward"])
        0.0
    """

    def __init__(
        self,
        size=64,
        lives=3,
        max_steps=1000,
        paddle_width=14,
        paddle_speed=4,
        ball_size=BALL,
        seed=None,
    ):
        _check_int("size", size, 16, 4096)
        _check_int("lives", lives, 1, GRID // (PIP + 2))
        _check_int("max_steps", max_steps, 1, None)
        _check_int("paddle_width", paddle_width, 1, GRID)
        _check_int("paddle_speed", paddle_speed, 0, GRID)
        _check_int("ball_size", ball_size, 1, PADDLE_Y - TOP)
        self.size = int(size)
        self.lives = int(lives)
        self.max_steps = int(max_steps)
        self.paddle_width = int(paddle_width)
        self.paddle_speed = int(paddle_speed)
        self.ball_size = int(ball_size)
        self.obs_space = {"image": image_box(self.size, self.size, 3)}
        self.act_space = Discrete(3)
        self._rng = np.random.default_rng(seed)
        self._paddle = 0
        self._ball = (0, 0, 0, 0)
        self._lives_left = self.lives
        self._steps = 0
        self._landed = False

    def _reset(self, seed):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._paddle = (GRID - self.paddle_width) // 2
        self._lives_left = self.lives
        self._steps = 0
        self._spawn()
        return self._observe()

    def _step(self, action):
        self._steps += 1
        move = {NOOP: 0, LEFT: -self.paddle_speed, RIGHT: self.paddle_speed}[action]
        self._paddle = min(max(self._paddle + move, 0), GRID - self.paddle_width)
        reward = 0.0
        if self._landed:
            self._spawn()
        else:
            reward = self._move_ball()
        terminal = self._lives_left == 0
        truncated = not terminal and self._steps >= self.max_steps
        return self._observe(), reward, terminal, truncated

    def _spawn(self):
        x = int(self._rng.integers(0, GRID - self.ball_size + 1))
        dx = BALL_DX[int(self._rng.integers(len(BALL_DX)))]
        dy = BALL_DY[int(self._rng.integers(len(BALL_DY)))]
        self._ball = (x, TOP, dx, dy)
        self._landed = False

    def _move_ball(self):
        x, y, dx, dy = self._ball
        x += dx
        if x < 0:
            x, dx = -x, -dx
        elif x > GRID - self.ball_size:
            x, dx = 2 * (GRID - self.ball_size) - x, -dx
        y += dy
        reward = 0.0
        if y + self.ball_size >= PADDLE_Y:
            y = PADDLE_Y - self.ball_size
            self._landed = True
            caught = (
                x + self.ball_size > self._paddle
                and x < self._paddle + self.paddle_width
            )
            reward = 1.0 if caught else -1.0
            self._lives_left -= 0 if caught else 1
        self._ball = (x, y, dx, dy)
        return reward

    def _observe(self):
        image = np.zeros((self.size, self.size, 3), np.uint8)
        for i in range(self._lives_left):
            self._fill(image, 1 + i * (PIP + 2), 1, PIP, PIP, PIP_COLOR)
        x, y = self._ball[:2]
        self._fill(image, x, y, self.ball_size, self.ball_size, BALL_COLOR)
        self._fill(
            image,
            self._paddle,
            PADDLE_Y,
            self.paddle_width,
            PADDLE_HEIGHT,
            PADDLE_COLOR,
        )
        return {"image": image}

    def _fill(self, image, x, y, width, height, color):
        # Grid to pixels: positions round down, extents to the nearest pixel
        # (at least one), so an object keeps its pixel size as it moves.
        top, left = y * self.size // GRID, x * self.size // GRID
        rows = max(1, (height * self.size + GRID // 2) // GRID)
        cols = max(1, (width * self.size + GRID // 2) // GRID)
        image[top : top + rows, left : left + cols] = color


def _check_int(name, value, low, high):
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"Catch({name}=...) must be an int {bounds}, got {value!r}.")
