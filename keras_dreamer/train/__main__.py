"""`python -m keras_dreamer.train ...` runs the training command."""

from keras_dreamer.train import main

raise SystemExit(main())
