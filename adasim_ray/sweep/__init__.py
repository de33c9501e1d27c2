"""Hyper-parameter sweeps (Ray Tune with Optuna and ASHA) over the Ray pretraining."""
