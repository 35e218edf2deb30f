#!/usr/bin/env python3
"""scikit-learn's MLPClassifier((64,)) on a CSV, on the split ringtrain used, features standardized
on the training rows as ringtrain does. Usage: sklearn_mlp.py <csv> <test-indices.json> <seeds>
Prints one JSON line per seed: {"seed": s, "accuracy": a}."""
import json
import sys

import numpy as np
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

path, test_file, seeds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [line.strip().split(",") for line in open(path) if line.strip()]
x = np.array([[float(v) for v in r[:-1]] for r in rows], dtype=np.float64)
y = np.array([r[-1] for r in rows])
test = np.zeros(len(rows), dtype=bool)
test[json.load(open(test_file))] = True
scaler = StandardScaler().fit(x[~test])
xs = scaler.transform(x)
for seed in range(seeds):
    model = MLPClassifier(hidden_layer_sizes=(64,), max_iter=1000, random_state=seed)
    model.fit(xs[~test], y[~test])
    print(json.dumps({"seed": seed, "accuracy": float(model.score(xs[test], y[test]))}), flush=True)
