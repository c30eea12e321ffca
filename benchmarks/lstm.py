"""The LSTM benchmark of issue #3: FusedLSTM against nn.LSTM (oneDNN / cuDNN), nn.LSTM on a PackedSequence and an
nn.LSTMCell loop, on the tutorial, long, small and IMDB-like (variable lengths) shapes.

    .venv/bin/python benchmarks/lstm.py                    # CPU, all shapes, 10 runs each: what `make benchmark` runs
    .venv/bin/python benchmarks/lstm.py --device cuda      # on a GPU (cuDNN comparison)
    .venv/bin/python benchmarks/lstm.py --shapes small --repeats 3 --output /tmp/x.json

Writes JSON into benchmarks/results/lstm-<device>-<date>-<machine>.json and prints a table. The code lives in
tl_core/benchmark.py (the notebook 03_fused_lstm.ipynb uses it too); this file is only the command line.
"""

import sys

from tl_core.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
